import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { hashToken, newToken } from './http/scopes.js';
import { writeOwnerOnly } from './security/secret-files.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SimCloud } from '../sim/cloud.js';
import { LinkProxy } from '../sim/link-proxy.js';
import { ArtifactOrigin } from '../sim/ota/artifact-origin.js';
import { DdiDevice, groupTargetToken } from '../sim/ota/ddi-device.js';
import { ReleaseSigner } from '../sim/ota/release-signer.js';
import { SimSite } from '../sim/site.js';
import { parseConfig } from './config/load.js';
import { cloudTopics } from './contracts/index.js';
import type { SiteConfigInput } from './config/schema.js';
import { Gateway, type GatewayStatus } from './gateway.js';
import { createLogger } from './logger.js';
import { ProblemLog } from './problems.js';
import { bar, renderRollout } from '../ota/render.js';

/** The demo's update server: valve tokens derive from this group secret, made for each run. */
const DEMO_GROUP_SECRET = randomBytes(32).toString('base64url');

const HELP = `outpost demo — a gateway, a simulated site and a simulated cloud on this machine

  --duration S        run S seconds, drain, print a summary and exit (default: until Ctrl-C)
  --json              print only one JSON line at the end; exit 0 only if nothing was lost
  --outage-every S    take the cloud link down every S seconds (default 20)
  --outage-for S      for S seconds (default 5)
  --children N        MQTT child devices (default 4)
  --meters N          Modbus energy meters (default 2)
  --valves N          valve controllers updated over the air from the gateway (default 24)
`;

export interface DemoSummary {
  readonly produced: number;
  readonly delivered: number;
  readonly lost: number;
  readonly duplicates: number;
  readonly dropped: number;
  readonly inOutbox: number;
  readonly outages: number;
  readonly childAcked: number;
  readonly childMissing: number;
  readonly durationS: number;
}

/** The demo site's rules: what an engineer would send to the cloud from such a site. */
/** What each rule of the demo does, in the words the header prints. */
const RULE_TEXT: Record<string, string> = {
  'pumps-raw': 'every pump reading to the cloud as it comes',
  'meter-electrical': 'every meter reading to the cloud',
  'meter-temperature-plausible': 'meter temperatures between -40 and 150 degC only',
  'power-5s': 'avg/min/max/count of meter power per 5 s window',
  boilers: 'every boiler reading to the cloud',
};

function demoRules(): SiteConfigInput['rules'] {
  return [
    { id: 'pumps-raw', type: 'filter', match: { device: 'pump-*', point: '*' } },
    { id: 'meter-electrical', type: 'filter', match: { device: 'meter-*', point: '*' } },
    { id: 'meter-temperature-plausible', type: 'filter', match: { device: 'meter-*', point: 'temperature' }, min: -40, max: 150 },
    { id: 'power-5s', type: 'window', match: { device: 'meter-*', point: 'power' }, windowMs: 5000, aggregates: ['avg', 'min', 'max', 'count'] },
    { id: 'boilers', type: 'filter', match: { device: 'boiler-*', point: '*' } },
  ];
}

export async function runDemo(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: 'string' },
      json: { type: 'boolean', default: false },
      'outage-every': { type: 'string', default: '20' },
      'outage-for': { type: 'string', default: '5' },
      children: { type: 'string', default: '4' },
      meters: { type: 'string', default: '2' },
      valves: { type: 'string', default: '24' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const num = (name: string, v: string | undefined, min: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: expected a number >= ${min}, got "${v}"`);
    return n;
  };
  const durationS = num('duration', values.duration, 1);
  const outageEveryS = num('outage-every', values['outage-every'], 1) ?? 20;
  const outageForS = num('outage-for', values['outage-for'], 0) ?? 5;
  const json = values.json;

  const dir = mkdtempSync(join(tmpdir(), 'outpost-demo-'));
  const cloud = await SimCloud.start();
  const link = await LinkProxy.start({ port: cloud.port });
  // The cloud's artifact origin sits behind its own proxy that goes down with the link.
  const origin = await new ArtifactOrigin().start();
  const originLink = await LinkProxy.start({ port: Number(new URL(origin.url).port) });
  const signer = ReleaseSigner.generate('demo-cloud');
  const valveCount = num('valves', values.valves, 0) ?? 24;
  const site = await SimSite.start({
    meters: num('meters', values.meters, 0) ?? 2,
    boilers: 1,
    children: num('children', values.children, 0) ?? 4,
    childIntervalMs: 250,
    pollIntervalMs: 500,
  });
  // The simulated pumps enroll through a group: each authenticates with the key derived from
  // this secret (docs/security.md), as a fleet provisioned at the factory would.
  const groupSecret = randomBytes(32).toString('base64url');
  writeOwnerOnly(join(dir, 'pumps.key'), groupSecret);
  const token = newToken();
  const tokenFile = join(dir, 'operator.token');
  writeOwnerOnly(tokenFile, `${token}\n`);
  const config = parseConfig(
    {
      gateway: { id: 'demo-gw1' },
      broker: { host: '127.0.0.1', port: 0 },
      identities: { groups: [{ name: 'pumps', devices: 'pump-*', secretFile: join(dir, 'pumps.key') }] },
      // TLS with a self-signed certificate made in the demo's directory, and one admin token for
      // the operator, declared by its hash as a site would provision it.
      http: { host: '127.0.0.1', port: 0, tokens: [{ name: 'demo-operator', scopes: ['admin'], sha256: hashToken(token) }] },
      devices: site.devices(),
      rules: demoRules(),
      cloud: { url: link.url, batchSize: 200, backoff: { initialMs: 200, maxMs: 2000 } },
      storage: { path: join(dir, 'outpost.db') },
      ota: {
        trustedKeys: { 'demo-cloud': signer.publicKeyPem },
        server: { host: '127.0.0.1', port: 0, tenant: 'demo', pollSeconds: 2, groupSecret: DEMO_GROUP_SECRET },
      },
    },
    'demo config',
  );
  const logFile = join(dir, 'gateway.log');
  const problems = new ProblemLog();
  const gateway = await Gateway.start(config, { problems, log: createLogger({ problems, destination: logFile, level: process.env.OUTPOST_LOG_LEVEL === undefined ? 'info' : undefined }) });
  site.startChildren(`mqtt://127.0.0.1:${gateway.ports.broker}`, groupSecret);
  const started = Date.now();
  // OTA: valve controllers poll the gateway's update server; a release arrives after 5 s and
  // rolls out in three phases (a few installs fail on purpose and are retried).
  const valves = Array.from(
    { length: valveCount },
    (_, i) =>
      new DdiDevice({ server: `http://127.0.0.1:${gateway.ports.ota}/demo`, id: `valve-${String(i + 1).padStart(2, '0')}`, authorization: `TargetToken ${groupTargetToken(DEMO_GROUP_SECRET, `valve-${String(i + 1).padStart(2, '0')}`)}`, version: '1.0.0', failRate: 0.08, installMs: 1500, rebootMs: 1000, maxPollMs: 2000 }),
  );
  for (const v of valves) v.start();
  const image = randomBytes(4 * 1024 * 1024);
  const originUrl = `http://127.0.0.1:${originLink.port}`;
  origin.put('/valve-fw-2.0.0.swu', image);

  // The cloud link goes away on a schedule so the outbox visibly fills, then drains.
  let outageEnds = 0;
  const timers: NodeJS.Timeout[] = [];
  const scheduleOutage = (inMs: number): void => {
    timers.push(
      setTimeout(() => {
        link.down();
        originLink.down();
        outageEnds = Date.now() + outageForS * 1000;
        timers.push(
          setTimeout(() => {
            link.restore();
            originLink.restore();
          }, outageForS * 1000),
        );
        scheduleOutage(outageEveryS * 1000);
      }, inMs),
    );
  };
  if (outageForS > 0) scheduleOutage(Math.min(8000, outageEveryS * 1000));
  timers.push(
    setTimeout(() => {
      const manifest = {
        release: 'valve-fw-2.0.0',
        product: 'valve-fw',
        version: '2.0.0',
        issuedAt: Date.now(),
        expiresAt: Date.now() + 7 * 86_400_000,
        target: { gateways: ['demo-gw1'], devices: ['valve-*'] },
        artifact: { name: 'valve-fw-2.0.0.swu', url: `${originUrl}/valve-fw-2.0.0.swu`, size: image.length, sha256: createHash('sha256').update(image).digest('hex') },
        rollout: { phases: [{ share: 10, waitMs: 3000 }, { share: 50, waitMs: 3000 }, { share: 100 }], failureThreshold: 0.3, maxRetries: 2 },
      };
      cloud.publishRetained(cloudTopics.release('outpost', 'demo-gw1', manifest.release), JSON.stringify(signer.sign(manifest))).catch(() => undefined);
    }, 5000),
  );

  const screen = new StatusLine(json ? 'off' : process.stdout.isTTY ? 'tty' : 'lines');
  const render = (phase: string): void =>
    screen.show(statusText(gateway.status(), cloud, link, site, (Date.now() - started) / 1000, outageEnds, phase, origin));
  const ticker = setInterval(() => render('running'), screen.mode === 'tty' ? 250 : 2000);
  if (!json) {
    process.stdout.write(
      `Outpost demo: gateway ${config.gateway.id}, ${site.slaves.size} Modbus slaves, ${site.children.length} MQTT child devices, cloud on ${cloud.url}\n` +
        `Status page https://127.0.0.1:${gateway.ports.http}/status (sign in with the token in ${tokenFile}; the certificate is self-signed, sha256 ${gateway.status().api.certificateSha256 ?? '-'})\n` +
        `API https://127.0.0.1:${gateway.ports.http}/api/v1/status · /metrics · log ${logFile}\n` +
        `  try: OUTPOST_TOKEN=$(cat ${tokenFile}) outpost status --url https://127.0.0.1:${gateway.ports.http} --ca ${join(dir, 'http.crt')}\n` +
        `Site: ${[...site.slaves.keys()].join(', ')} (Modbus TCP, polled every 0.5 s); ${site.children.map((c) => c.id).join(', ')} (MQTT, authenticated by enrollment-group keys); ${valveCount} valve controllers polling the update server.\n` +
        `Rules: ${(config.rules ?? []).map((r) => `${r.id} (${RULE_TEXT[r.id] ?? r.type})`).join('; ')}.\n` +
        `The cloud link drops for ${outageForS}s every ${outageEveryS}s. ${durationS ? `Running ${durationS}s.` : 'Ctrl-C to stop.'}\n` +
        `Each line: in = readings the gateway took from the site · to cloud = what the rules put in the outbox (windows add aggregates, so it can pass "in") · outbox = queued for the cloud · delivered = acknowledged by the cloud broker · children, modbus = devices connected.\n` +
        `OTA: a signed release arrives from the cloud after 5 s; the gateway fetches it once and rolls it out to the valves in three phases (a few installs fail on purpose and are retried).\n`,
    );
  }

  let interrupts = 0;
  await new Promise<void>((resolve) => {
    const onSignal = (): void => {
      interrupts++;
      if (interrupts > 1) process.exit(130);
      resolve();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    if (durationS) timers.push(setTimeout(resolve, durationS * 1000));
  });

  // Finish: children stop, the link comes back, the gateway drains its outbox and stops.
  for (const t of timers) clearTimeout(t);
  link.restore();
  originLink.restore();
  clearInterval(ticker);
  await Promise.all(valves.map((v) => v.stop()));
  const finishing = setInterval(() => render('draining'), screen.mode === 'tty' ? 250 : 2000);
  await site.stopChildren();
  await gateway.stop({ drainMs: 60_000 });
  clearInterval(finishing);
  render('stopped');
  screen.end();
  await site.stop();
  await link.close();
  await originLink.close();
  await origin.stop();
  await cloud.stop();

  const final = gateway.status();
  const ota = final.ota?.rollouts[0];
  const acked = site.childAcked();
  const childMissing = cloud.ledger.missing(acked).length;
  const delivered = cloud.ledger.uniqueFrom(config.gateway.id);
  const produced = final.outbox.appended;
  const summary: DemoSummary = {
    produced,
    delivered,
    // Every reading taken into the outbox is delivered, dropped by a counted policy, or still
    // queued; anything else is lost. Children's acknowledged readings are checked one by one.
    lost: Math.max(
      produced + final.outbox.replayed - final.outbox.dropped - final.outbox.expired - final.outbox.deadLettered - final.outbox.depth - delivered,
      childMissing,
    ),
    duplicates: cloud.ledger.duplicates,
    dropped: final.outbox.dropped,
    inOutbox: final.outbox.depth,
    outages: link.outages,
    childAcked: acked.length,
    childMissing,
    durationS: Math.round((Date.now() - started) / 100) / 10,
  };
  if (json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else {
    process.stdout.write(
      `\n${summary.produced} readings produced for the cloud, ${summary.delivered} delivered (${summary.duplicates} duplicates removed by id), ` +
        `${summary.dropped} dropped by policy, ${summary.inOutbox} still queued, ${summary.lost} lost; ` +
        `${summary.outages} link outages; ${summary.childAcked} child readings acknowledged, ${summary.childMissing} missing.\n` +
        (ota ? `OTA ${ota.release}: ${ota.state}, ${ota.phases.reduce((n, p) => n + p.succeeded, 0)} of ${valveCount} valves updated; ${origin.bytesSent} bytes from the cloud origin for a ${image.length}-byte image.\n` : ''),
    );
  }
  if (summary.lost !== 0) process.stderr.write(`readings were lost; store and log kept in ${dir}\n`);
  // A script (--json) gets its summary only; a person gets the log to read afterwards.
  else if (json) rmSync(dir, { recursive: true, force: true });
  if (!json) {
    process.stdout.write(
      `The gateway's log, store and certificates are kept in ${dir} (log: ${logFile}); remove the directory when done.\n` +
        `Next: copy examples/site.yaml, describe your devices (docs/config.md), check it with \`outpost validate site.yaml\`, run it with \`outpost start --config site.yaml\`; docs/security.md says how devices enroll.\n`,
    );
  }
  return summary.lost === 0 ? 0 : 1;
}

function fmt(n: number): string {
  return n.toLocaleString('en-US');
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function statusText(s: GatewayStatus, cloud: SimCloud, link: LinkProxy, site: SimSite, elapsedS: number, outageEnds: number, phase: string, origin: ArtifactOrigin): string {
  const modbus = s.drivers.filter((d) => String(d.name).startsWith('modbus:'));
  const modbusUp = modbus.filter((d) => d.connected === true).length;
  const linkText = link.up
    ? `link ${s.link === 'up' ? 'up  ' : s.link}`
    : `link DOWN ${Math.max(0, Math.ceil((outageEnds - Date.now()) / 1000))}s`;
  const line = [
    `${phase === 'running' ? '' : `${phase} `}${Math.floor(elapsedS)}s`,
    linkText,
    `in ${fmt(s.readingsIn)}`,
    `to cloud ${fmt(s.ruleOutputs)}`,
    `outbox ${fmt(s.outbox.depth)} (${bytes(s.outbox.bytes)})`,
    `delivered ${fmt(cloud.ledger.uniqueFrom(s.gateway))}${cloud.ledger.duplicates > 0 ? ` +${fmt(cloud.ledger.duplicates)} dup` : ''}`,
    `children ${site.childrenConnected}/${site.children.length}`,
    `modbus ${modbusUp}/${modbus.length}`,
  ].join(' │ ');
  const ota: string[] = [];
  const f = s.ota?.fetching as { artifact: string; have: number; size: number } | undefined;
  if (f) ota.push(`OTA fetching ${f.artifact} ${bar(f.have, f.size)} ${bytes(f.have)} / ${bytes(f.size)} (cloud origin sent ${bytes(origin.bytesSent)})`);
  for (const r of s.ota?.rollouts ?? []) ota.push(...renderRollout(r).map((l, i) => (i === 0 ? `OTA ${l}` : `   ${l}`)));
  return [line, ...ota].join('\n');
}

/** One live line on a terminal; a line every few seconds when stdout is a pipe or a file. */
class StatusLine {
  private lines = 0;
  constructor(readonly mode: 'tty' | 'lines' | 'off') {}

  /** Redraws the block of lines in place (cursor up over the previous block, clear to the end). */
  show(text: string): void {
    if (this.mode === 'tty') {
      const up = this.lines > 0 ? `\x1b[${this.lines}F` : '\r';
      process.stdout.write(`${up}\x1b[J${text}`);
      this.lines = text.split('\n').length - 1;
    } else if (this.mode === 'lines') process.stdout.write(`${text}\n`);
  }

  end(): void {
    if (this.mode === 'tty') process.stdout.write('\n');
  }
}
