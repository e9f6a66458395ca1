/**
 * The project's one glob matcher and one MQTT topic-filter matcher: rules match readings with
 * them, the uplink routes downlink messages with them, OTA targets devices with them.
 */

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

/**
 * An MQTT topic filter (MQTT 3.1.1 §4.7): `+` matches one level, a trailing `#` the rest,
 * including the parent level itself (`a/#` matches `a`); everything else is literal. A filter
 * starting with a wildcard does not match topics starting with `$` [MQTT-4.7.2-1].
 */
export function compileTopicFilter(filter: string): (topic: string) => boolean {
  const want = filter.split('/');
  const multi = want[want.length - 1] === '#';
  const fixed = multi ? want.slice(0, -1) : want;
  const wildFirst = want[0] === '+' || want[0] === '#';
  return (topic) => {
    if (wildFirst && topic.startsWith('$')) return false;
    const got = topic.split('/');
    if (multi ? got.length < fixed.length : got.length !== fixed.length) return false;
    for (let i = 0; i < fixed.length; i++) if (fixed[i] !== '+' && fixed[i] !== got[i]) return false;
    return true;
  };
}

/** Whether `topic` matches the MQTT topic filter `filter` (compile once with compileTopicFilter on hot paths). */
export function topicMatches(filter: string, topic: string): boolean {
  return compileTopicFilter(filter)(topic);
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

/**
 * Whether every topic `requested` can match is also matched by `allowed` (both topic filters): a
 * subscription is authorised only when it asks for no more than a permission grants. `+` in
 * `requested` needs `+` or `#` in `allowed` at that level; `#` needs `#`. A filter starting with
 * `$` is covered only by a filter starting with the same literal level (wildcards never reach `$`).
 */
export function filterCovers(allowed: string, requested: string): boolean {
  const a = allowed.split('/');
  const r = requested.split('/');
  if (requested.startsWith('$') && (a[0] === '+' || a[0] === '#')) return false;
  for (let i = 0; i < r.length; i++) {
    const want = a[i];
    if (want === '#') return true;
    if (want === undefined) return false;
    const got = r[i];
    if (got === '#') return false;
    if (got === '+') {
      if (want !== '+') return false;
    } else if (want !== '+' && want !== got) return false;
  }
  // `a/#` also covers `a` itself [MQTT-4.7.1-2].
  return a.length === r.length || (a.length === r.length + 1 && a[a.length - 1] === '#');
}
