import Table from 'cli-table3';

/** No borders at all: columns are separated by two spaces, as `ps` or `kubectl get` print them. */
const NO_BORDERS = {
  top: '',
  'top-mid': '',
  'top-left': '',
  'top-right': '',
  bottom: '',
  'bottom-mid': '',
  'bottom-left': '',
  'bottom-right': '',
  left: '',
  'left-mid': '',
  mid: '',
  'mid-mid': '',
  right: '',
  'right-mid': '',
  middle: '  ',
} as const;

export interface PlainTableOptions {
  /** Columns (by index) aligned to the right: counts and versions. */
  readonly right?: readonly number[];
}

/**
 * A table for the CLI: a header row, then one line per row, columns aligned by display width
 * (cli-table3, which measures wide and combining characters). Plain text only: no borders and no
 * colours, on a terminal or not, so that scripts and tests read it like `awk` would; trailing
 * spaces are trimmed. Cells that hold a line break span several lines.
 */
export function plainTable(head: readonly string[], rows: readonly (readonly string[])[], opts: PlainTableOptions = {}): string {
  const t = new Table({
    head: [...head],
    chars: NO_BORDERS,
    // Empty style lists: cli-table3 colours the header red and the borders grey by default.
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0, compact: true },
    colAligns: head.map((_, i) => (opts.right?.includes(i) ? 'right' : 'left')),
  });
  t.push(...rows.map((r) => [...r]));
  return `${t
    .toString()
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n')}\n`;
}
