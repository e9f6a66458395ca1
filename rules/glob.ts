/**
 * Glob patterns for device and point names: `*` matches any run of characters, `?` one
 * character; everything else is literal. Compiled once into a RegExp.
 */
export function compileGlob(pattern: string): (name: string) => boolean {
  if (pattern === '*') return () => true;
  if (!/[*?]/.test(pattern)) return (name) => name === pattern;
  // Code points, not UTF-16 units, so `?` matches one whole character of any device name.
  const source = [...pattern]
    .map((ch) => (ch === '*' ? '.*' : ch === '?' ? '.' : ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&')))
    .join('');
  const re = new RegExp(`^${source}$`, 'su');
  return (name) => re.test(name);
}

/** A rule's `match` as one test of a reading's device and point (globs, and the topic filter if any). */
export function compileMatch(match: { device: string; point: string; topic?: string | undefined }): {
  device: (name: string) => boolean;
  reading: (device: string, point: string) => boolean;
} {
  const device = compileGlob(match.device);
  const point = compileGlob(match.point);
  const topic = match.topic === undefined ? undefined : compileTopicFilter(match.topic);
  return { device, reading: (d, p) => device(d) && point(p) && (topic === undefined || topic(`${d}/${p}`)) };
}

/**
 * An MQTT topic filter: `+` matches one level, a trailing `#` the rest (also none); everything
 * else is literal. Readings are matched as `{device}/{point}`.
 */
export function compileTopicFilter(filter: string): (topic: string) => boolean {
  const want = filter.split('/');
  const multi = want[want.length - 1] === '#';
  const fixed = multi ? want.slice(0, -1) : want;
  return (topic) => {
    const got = topic.split('/');
    if (multi ? got.length < fixed.length : got.length !== fixed.length) return false;
    return fixed.every((w, i) => w === '+' || w === got[i]);
  };
}

/** Why `filter` is not a valid topic filter, or undefined when it is. */
export function topicFilterProblem(filter: string): string | undefined {
  const levels = filter.split('/');
  for (const [i, l] of levels.entries()) {
    if (l === '#' && i !== levels.length - 1) return '"#" may only be the last level';
    if (l !== '#' && l !== '+' && /[#+]/.test(l)) return `"${l}": a wildcard must be a whole level`;
  }
  return undefined;
}
