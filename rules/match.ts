import { compileGlob, compileTopicFilter } from '../runtime/contracts/index.js';

/** A rule's `match` as one test of a reading's device and point (globs, and the topic filter if any). */
export function compileMatch(match: { device: string; point: string; topic?: string | undefined }): {
  device: (name: string) => boolean;
  reading: (device: string, point: string) => boolean;
} {
  const device = compileGlob(match.device);
  const point = compileGlob(match.point);
  // Readings are matched as the topic `{device}/{point}`.
  const topic = match.topic === undefined ? undefined : compileTopicFilter(match.topic);
  return { device, reading: (d, p) => device(d) && point(p) && (topic === undefined || topic(`${d}/${p}`)) };
}
