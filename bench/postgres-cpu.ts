// PostgreSQL's CPU time spent on the bench's requests: the time on CPU of the client backends of
// the bench database, read from /proc/<pid>/schedstat (first field, nanoseconds on CPU) around the
// sequential phase. Taken at c=1 on purpose: at c=10 on 2 cores autocannon, the app and PostgreSQL
// queue for the cores, and the figures carry run-queue effects (work batched into one wake-up or one
// system call, caches shared and evicted); one request at a time, a backend's CPU time is that
// request's own work. Needs the server on this machine: when it is elsewhere (DATABASE_URL),
// its pids mean nothing here and every figure is NaN (shown as n/a).
import { readFile } from 'node:fs/promises'
import pg from 'pg'

/** Nanoseconds on CPU per backend pid at one moment; undefined when the server is not local. */
export type CpuSample = ReadonlyMap<number, number> | undefined

export interface PostgresCpu {
  sample (): Promise<CpuSample>
  close (): Promise<void>
}

async function onCpuNanoseconds (pid: number): Promise<number | undefined> {
  try {
    const first = (await readFile(`/proc/${pid}/schedstat`, 'utf8')).split(' ')[0]
    return first === undefined || first === '' ? undefined : Number(first)
  } catch {
    return undefined // the backend exited (or the pid is not ours to read)
  }
}

// The admin connection's own backend is a postgres process here only when the server is local:
// elsewhere its pid is at best an unrelated process of this machine.
async function isLocal (client: pg.Client): Promise<boolean> {
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  const comm = await readFile(`/proc/${rows[0]?.pid ?? 0}/comm`, 'utf8').catch(() => '')
  return comm.trim() === 'postgres'
}

/**
 * One admin connection, kept open for the run, that lists the bench database's client backends
 * (itself excluded, so reading costs nothing that is counted). Pools never shrink (idleTimeoutMillis 0),
 * so the set is stable; `microsecondsBetween` still copes with one that came or went.
 */
export async function openPostgresCpu (adminUrl: string): Promise<PostgresCpu> {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  const local = await isLocal(client)
  return {
    async sample () {
      if (!local) return undefined
      const { rows } = await client.query<{ pid: number }>(`
        SELECT pid FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = current_database()`)
      const readings = await Promise.all(rows.map(async ({ pid }) => [pid, await onCpuNanoseconds(pid)] as const))
      return new Map(readings.filter((reading): reading is readonly [number, number] => reading[1] !== undefined))
    },
    close: () => client.end()
  }
}

/**
 * CPU microseconds the backends spent between two samples: summed over the pids present in both
 * (a backend that started or exited in between has no whole figure), skipping a pid whose counter
 * went down (the pid was reused by a new backend). NaN when either sample is unavailable.
 */
export function microsecondsBetween (before: CpuSample, after: CpuSample): number {
  if (before === undefined || after === undefined) return Number.NaN
  let nanoseconds = 0
  for (const [pid, end] of after) {
    const start = before.get(pid)
    if (start !== undefined && end >= start) nanoseconds += end - start
  }
  return nanoseconds / 1000
}
