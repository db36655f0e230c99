// Verdicts on the server's version: a minor release without the fix of a known row-level security
// vulnerability. The table holds, per CVE, the first fixed minor release of every major that was
// still supported when the fix shipped (from the PostgreSQL release notes and security pages);
// a major that had already reached end of life got no fix, and an affected major older than every
// fixed one is reported as unfixable short of a major upgrade.

/** One RLS vulnerability and the first minor release of each major that fixes it. */
export interface RlsCve {
  id: string
  summary: string
  /** The first major with the bug (RLS itself arrived in 9.5), as a comparable major number. */
  affectedFrom: number
  /** Major (9.5 -> 905, 10 -> 10 ... ) to the first fixed minor. */
  fixedIn: Readonly<Record<number, number>>
}

// Majors before 10 are numbered 9.5 -> 905, 9.6 -> 906 so that they sort below 10.
export const RLS_CVES: readonly RlsCve[] = [
  // Fixed in 9.5.2 (2016-03-31): a cached plan kept the RLS decision of the role it was planned for.
  { id: 'CVE-2016-2193', summary: 'plans cached across a role change keep the wrong row-level security decision', affectedFrom: 905, fixedIn: { 905: 2 } },
  // Fixed in 10.1, 9.6.6, 9.5.10 (2017-11-09).
  { id: 'CVE-2017-15099', summary: 'INSERT … ON CONFLICT DO UPDATE could bypass the SELECT policy', affectedFrom: 905, fixedIn: { 10: 1, 906: 6, 905: 10 } },
  // Fixed in 11.3, 10.8, 9.6.13, 9.5.17 (2019-05-09).
  { id: 'CVE-2019-10130', summary: 'selectivity estimators could read rows a policy hides', affectedFrom: 905, fixedIn: { 11: 3, 10: 8, 906: 13, 905: 17 } },
  // Fixed in 15.3, 14.8, 13.11, 12.15, 11.20 (2023-05-11).
  { id: 'CVE-2023-2455', summary: 'policies inlined into a function ignored a role change after planning', affectedFrom: 905, fixedIn: { 15: 3, 14: 8, 13: 11, 12: 15, 11: 20 } },
  // Fixed in 17.1, 16.5, 15.9, 14.14, 13.17, 12.21 (2024-11-14).
  { id: 'CVE-2024-10976', summary: 'policies below subqueries and in cached plans ignored a role change', affectedFrom: 905, fixedIn: { 17: 1, 16: 5, 15: 9, 14: 14, 13: 17, 12: 21 } },
  // Fixed in 17.1, 16.5, 15.9, 14.14, 13.17, 12.21 (2024-11-14).
  { id: 'CVE-2024-10978', summary: 'SET ROLE / SET SESSION AUTHORIZATION could revert to the wrong role, and with it the wrong policies', affectedFrom: 905, fixedIn: { 17: 1, 16: 5, 15: 9, 14: 14, 13: 17, 12: 21 } },
  // Fixed in 17.6, 16.10, 15.14, 14.19, 13.22 (2025-08-14).
  { id: 'CVE-2025-8713', summary: 'optimizer statistics could expose rows a policy or a view hides', affectedFrom: 905, fixedIn: { 17: 6, 16: 10, 15: 14, 14: 19, 13: 22 } }
]

/** The major (905 for 9.5, 17 for 17) and minor of a server_version_num. */
export function splitVersion (versionNum: number): { major: number, minor: number } {
  return versionNum >= 100000
    ? { major: Math.floor(versionNum / 10000), minor: versionNum % 10000 }
    : { major: Math.floor(versionNum / 100), minor: versionNum % 100 }
}

/** The CVEs a server_version_num is exposed to, with the release that fixes each (or none). */
export function missingRlsFixes (versionNum: number): Array<{ cve: RlsCve, fixedIn: string | null }> {
  const { major, minor } = splitVersion(versionNum)
  const missing: Array<{ cve: RlsCve, fixedIn: string | null }> = []
  for (const cve of RLS_CVES) {
    if (major < cve.affectedFrom) continue
    const fixedMinor = cve.fixedIn[major]
    const majors = Object.keys(cve.fixedIn).map(Number)
    if (fixedMinor !== undefined) {
      if (minor < fixedMinor) missing.push({ cve, fixedIn: `${major >= 10 ? major : `${Math.floor(major / 100)}.${major % 100}`}.${fixedMinor}` })
    } else if (major < Math.max(...majors)) {
      // Affected, but the major was past end of life when the fix shipped.
      missing.push({ cve, fixedIn: null })
    }
  }
  return missing
}
