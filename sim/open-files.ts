import { readFileSync } from 'node:fs';

/** This process's limits on open files (Linux `/proc/self/limits`); undefined where it cannot tell. */
export function openFileLimits(): { soft: number; hard: number } | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return undefined;
    const n = (v: string): number => (v === 'unlimited' ? Number.POSITIVE_INFINITY : Number(v));
    return { soft: n(m[1]!), hard: n(m[2]!) };
  } catch {
    return undefined;
  }
}

/**
 * `command args` so that the process may hold `needed` open files (a broker with 10,000
 * connections needs more than the usual soft limit of 1,024): unchanged when this process's soft
 * limit is enough (children inherit it), else started through `bash -c 'ulimit -n N; exec …'`,
 * which raises the soft limit up to the hard one. The process id stays the same (exec). Throws
 * when even the hard limit is too low: only root can raise that.
 */
export function withOpenFiles(needed: number, command: string, args: readonly string[]): { command: string; args: string[] } {
  const limits = openFileLimits();
  if (!limits || limits.soft >= needed) return { command, args: [...args] };
  if (limits.hard < needed) {
    throw new Error(`${needed} open files are needed but the hard limit is ${limits.hard}: raise it (ulimit -Hn, or LimitNOFILE= in systemd) and run again`);
  }
  return { command: 'bash', args: ['-c', `ulimit -n ${needed} && exec "$0" "$@"`, command, ...args] };
}
