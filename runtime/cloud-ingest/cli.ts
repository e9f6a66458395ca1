import { parseArgs } from 'node:util';
import { errorMessage, redactUrl } from '../contracts/index.js';
import { createLogger } from '../logger.js';
import { CloudIngestConsumer, type IngestFigures } from './consumer.js';
import { INGEST_OPTIONS, INGEST_USAGE, IngestOptionsError, resolveIngestOptions } from './options.js';
import { PgSink } from './pg-sink.js';

/** One line of figures: totals since the start and rates since the line before. */
export function figuresLine(f: IngestFigures, prev: IngestFigures | undefined, seconds: number, json: boolean, final = false): string {
  const refused = Object.values(f.refused).reduce((a, b) => a + b, 0);
  const rate = (now: number, before: number | undefined): number => (seconds > 0 ? Math.round(((now - (before ?? 0)) / seconds) * 10) / 10 : 0);
  const duplicates = f.readings - f.rows;
  if (json) {
    return JSON.stringify({
      ...(final ? { final: true } : {}),
      ...f,
      duplicates,
      batchesPerS: rate(f.batches, prev?.batches),
      readingsPerS: rate(f.readings, prev?.readings),
    });
  }
  const reasons = Object.entries(f.refused)
    .filter(([, n]) => n > 0)
    .map(([r, n]) => `${r} ${n}`)
    .join(', ');
  return (
    `cloud-ingest${final ? ' (final)' : ''}: ${f.batches} batches (${rate(f.batches, prev?.batches)}/s), ${f.readings} readings (${rate(f.readings, prev?.readings)}/s), ` +
    `${f.rows} new rows, ${duplicates} duplicates, ${refused} refused${reasons ? ` (${reasons})` : ''}, ${f.retries} database retries, ${f.connected} sessions connected` +
    (f.brokers.length > 0 ? ` (${[...new Set(f.brokers)].join(', ')})` : '')
  );
}

/** `outpost cloud-ingest …`: runs until SIGTERM or SIGINT, then drains and exits 0. */
export async function cloudIngestCommand(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(INGEST_USAGE);
    return 0;
  }
  const { values } = parseArgs({ args, options: INGEST_OPTIONS, strict: true });
  let opts;
  try {
    opts = resolveIngestOptions(values);
  } catch (err) {
    if (!(err instanceof IngestOptionsError)) throw err;
    process.stderr.write(`outpost cloud-ingest: ${err.problems.join('\n  ')}\n(outpost cloud-ingest --help lists the options)\n`);
    return 2;
  }
  const log = createLogger().child({ component: 'cloud-ingest' });
  const sink = new PgSink(opts.database, opts.table, { maxConnections: opts.concurrency + 1 });
  try {
    await sink.ensureTable();
  } catch (err) {
    await sink.close().catch(() => undefined);
    process.stderr.write(`outpost cloud-ingest: cannot create or open table ${opts.table} in ${redactUrl(opts.database)}: ${errorMessage(err)} (is PostgreSQL running, and may this user create tables?)\n`);
    return 1;
  }

  let signalled = false;
  let wake: (() => void) | undefined;
  const onSignal = (): void => {
    signalled = true;
    wake?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const consumer = new CloudIngestConsumer(opts, sink, log);
  consumer.start();
  const sessions = opts.concurrency === 1 ? opts.clientId : `${opts.clientId}-1…${opts.concurrency}`;
  process.stdout.write(
    `outpost cloud-ingest: ${consumer.filter} from ${opts.brokers.map(redactUrl).join(', ')} as ${sessions}, into ${opts.table} at ${redactUrl(opts.database)}\n`,
  );

  let prev: IngestFigures | undefined;
  let prevAt = Date.now();
  const timer =
    opts.statsEverySeconds > 0
      ? setInterval(() => {
          const now = Date.now();
          const f = consumer.figures();
          process.stdout.write(`${figuresLine(f, prev, (now - prevAt) / 1000, opts.json)}\n`);
          prev = f;
          prevAt = now;
        }, opts.statsEverySeconds * 1000)
      : undefined;

  if (!signalled) await new Promise<void>((resolve) => (wake = resolve));
  if (timer) clearInterval(timer);
  log.info('draining');
  await consumer.drain();
  process.stdout.write(`${figuresLine(consumer.figures(), prev, (Date.now() - prevAt) / 1000, opts.json, true)}\n`);
  await sink.close();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return 0;
}
