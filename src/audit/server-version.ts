// Verdicts on the server's version: a minor release without the fix of a known row-level security
// vulnerability. The table holds, per CVE, the first fixed minor release of every major that was
// still supported when the fix shipped (from the PostgreSQL release notes and security pages);
// a major that had already reached end of life got no fix, and an affected major older than every
// fixed one is reported as unfixable short of a major upgrade.

/** One RLS vulnerability and the first minor release of each major that fixes it. */
export interface RlsCve {
  id: string
  summary: string
  /** The first major with the bug (row-level security itself arrived in 9.5). */
  affectedFrom: string
  /** Major ('9.5', '10', '17') to the first minor release with the fix. */
  fixedIn: Readonly<Record<string, number>>
}

export const RLS_CVES: readonly RlsCve[] = [
  // Fixed in 9.5.2 (2016-03-31): a cached plan kept the RLS decision of the role it was planned for.
  { id: 'CVE-2016-2193', summary: 'plans cached across a role change keep the wrong row-level security decision', affectedFrom: '9.5', fixedIn: { 9.5: 2 } },
  // Fixed in 10.1, 9.6.6, 9.5.10 (2017-11-09).
  { id: 'CVE-2017-15099', summary: 'INSERT … ON CONFLICT DO UPDATE could bypass the SELECT policy', affectedFrom: '9.5', fixedIn: { 10: 1, 9.6: 6, 9.5: 10 } },
  // Fixed in 11.3, 10.8, 9.6.13, 9.5.17 (2019-05-09).
  { id: 'CVE-2019-10130', summary: 'selectivity estimators could read rows a policy hides', affectedFrom: '9.5', fixedIn: { 11: 3, 10: 8, 9.6: 13, 9.5: 17 } },
  // Fixed in 15.3, 14.8, 13.11, 12.15, 11.20 (2023-05-11).
  { id: 'CVE-2023-2455', summary: 'policies inlined into a function ignored a role change after planning', affectedFrom: '9.5', fixedIn: { 15: 3, 14: 8, 13: 11, 12: 15, 11: 20 } },
  // Fixed in 17.1, 16.5, 15.9, 14.14, 13.17, 12.21 (2024-11-14).
  { id: 'CVE-2024-10976', summary: 'policies below subqueries and in cached plans ignored a role change', affectedFrom: '9.5', fixedIn: { 17: 1, 16: 5, 15: 9, 14: 14, 13: 17, 12: 21 } },
  // Fixed in 17.1, 16.5, 15.9, 14.14, 13.17, 12.21 (2024-11-14).
  { id: 'CVE-2024-10978', summary: 'SET ROLE / SET SESSION AUTHORIZATION could revert to the wrong role, and with it the wrong policies', affectedFrom: '9.5', fixedIn: { 17: 1, 16: 5, 15: 9, 14: 14, 13: 17, 12: 21 } },
  // Fixed in 17.6, 16.10, 15.14, 14.19, 13.22 (2025-08-14).
  { id: 'CVE-2025-8713', summary: 'optimizer statistics could expose rows a policy or a view hides', affectedFrom: '9.5', fixedIn: { 17: 6, 16: 10, 15: 14, 14: 19, 13: 22 } }
]

// Majors in release order, as numbers: 9.5 < 9.6 < 10 < 17.
const rank = Number

/** The major ('9.6', '17') and minor of a server_version_num (90624 is 9.6.24, 170005 is 17.5). */
function splitVersion (versionNum: number): { major: string, minor: number } {
  return versionNum >= 100000
    ? { major: String(Math.floor(versionNum / 10000)), minor: versionNum % 10000 }
    : { major: `${Math.floor(versionNum / 10000)}.${Math.floor(versionNum / 100) % 100}`, minor: versionNum % 100 }
}

/** The CVEs a server_version_num is exposed to, with the release that fixes each (null: the major never got the fix). */
export function missingRlsFixes (versionNum: number): Array<{ cve: RlsCve, fixedIn: string | null }> {
  const { major, minor } = splitVersion(versionNum)
  const missing: Array<{ cve: RlsCve, fixedIn: string | null }> = []
  for (const cve of RLS_CVES) {
    if (rank(major) < rank(cve.affectedFrom)) continue
    const fixedMinor = cve.fixedIn[major]
    if (fixedMinor !== undefined) {
      if (minor < fixedMinor) missing.push({ cve, fixedIn: `${major}.${fixedMinor}` })
    } else if (rank(major) < Math.max(...Object.keys(cve.fixedIn).map(rank))) {
      // Affected, but the major was past end of life when the fix shipped.
      missing.push({ cve, fixedIn: null })
    }
  }
  return missing
}
