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
