import type { RolloutStatus } from './rollout.js';

/** A fixed-width bar: `[#####.....]`. */
export function bar(done: number, total: number, width = 20): string {
  const n = total > 0 ? Math.round((done / total) * width) : 0;
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}]`;
}

/** One line per phase of a rollout: share, a progress bar of finished devices, and the counts. */
export function renderRollout(r: RolloutStatus): string[] {
  const lines = [`${r.release} (${r.version}): ${r.state}${r.detail ? ` — ${r.detail}` : ''}`];
  r.phases.forEach((p, i) => {
    const mark = i === r.phase && (r.state === 'running' || r.state === 'paused') ? '>' : ' ';
    const finished = p.succeeded + p.failed;
    lines.push(
      ` ${mark} phase ${i + 1} (${String(p.share).padStart(3)} %) ${bar(finished, p.devices)} ${String(p.succeeded).padStart(4)} ok ${String(p.failed).padStart(3)} failed ${String(p.active).padStart(3)} busy / ${p.devices}`,
    );
  });
  return lines;
}
