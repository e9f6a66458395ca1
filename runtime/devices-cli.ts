import { parseArgs } from 'node:util';
import { errorMessage } from './contracts/index.js';
import { CONNECTION_OPTIONS, type ConnectionArgs, type FetchLike } from './http/client.js';
import { plainTable } from './plain-table.js';

/**
 * The device registry from the command line (docs/operations.md, "Devices from the command
 * line"): `outpost devices [list|show|explain]`, `twin get|set`, `call` and `configurations`, over
 * the gateway's API (/api/v1/devices, /api/v1/configurations). A table for people by default,
 * the API's answer as it came with `--json`. Exit codes: 0 done, 1 the gateway refused or failed
 * (an unknown device, an offline device, a call without an answer in time, a device that answered
 * 400 or more, a gateway that cannot be reached), 2 a usage error.
 */

/** The gateway's URL and a fetch that presents the token and trusts its certificate (cli.ts `connect`); undefined once it has reported why not. */
export type Connect = (args: ConnectionArgs) => Promise<{ url: string; fetch: FetchLike } | undefined>;

/** What ends a command early: one line for the user and the exit code (1 refused or failed, 2 usage). */
export class CliFailure extends Error {
  override readonly name = 'CliFailure';
  constructor(
    readonly exitCode: 1 | 2,
    message: string,
  ) {
    super(message);
  }
}

const usage = (message: string): CliFailure => new CliFailure(2, message);

type Verb = (args: string[], connect: Connect) => Promise<number>;

/** The verbs this file serves, by the name cli.ts dispatches on. */
const VERBS: Readonly<Record<string, Verb>> = {
  devices: devicesVerb,
  twin: twinVerb,
  call: callVerb,
  configurations: configurationsVerb,
};

export async function devicesCommand(command: string, args: string[], connect: Connect): Promise<number> {
  const verb = Object.hasOwn(VERBS, command) ? VERBS[command] : undefined;
  if (!verb) {
    process.stderr.write(`outpost: "${command}" is not a device verb (devices, twin, call, configurations)\n`);
    return 2;
  }
  try {
    return await verb(args, connect);
  } catch (err) {
    if (!(err instanceof CliFailure)) throw err;
    if (err.message !== '') process.stderr.write(`${err.message}\n`);
    return err.exitCode;
  }
}

// ---- the verbs ----------------------------------------------------------------------------------

const COMMON = { ...CONNECTION_OPTIONS, json: { type: 'boolean', default: false } } as const;

async function devicesVerb(args: string[], connect: Connect): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: COMMON });
  const [sub = 'list', id, ...extra] = positionals;
  if (sub === 'list') {
    if (id !== undefined) throw usage(`outpost devices list takes no device (outpost devices show ${id} shows one)`);
    const api = await reach(connect, values);
    const body = await requestApi(api, 'GET', '/api/v1/devices');
    print(values.json ? body : renderDeviceList(body as DeviceList, Date.now()), values.json);
    return 0;
  }
  if (sub !== 'show' && sub !== 'explain' && sub !== 'remove') throw usage(`outpost devices: unknown verb "${sub}" (list, show ID, explain ID or remove ID)`);
  if (id === undefined || extra.length > 0) throw usage(`outpost devices ${sub}: give one device ID (outpost devices lists them)`);
  const api = await reach(connect, values);
  if (sub === 'remove') {
    const body = await requestApi(api, 'DELETE', devicePath(id));
    print(values.json ? body : `${id}: removed from the inventory\n`, values.json);
  } else if (sub === 'show') {
    const body = await requestApi(api, 'GET', devicePath(id));
    print(values.json ? body : renderDevice(body as TwinView, Date.now()), values.json);
  } else {
    const body = await requestApi(api, 'GET', `${devicePath(id)}/explain`);
    print(values.json ? body : renderExplain(body as Explained), values.json);
  }
  return 0;
}

async function twinVerb(args: string[], connect: Connect): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...COMMON, patch: { type: 'string' } } });
  const [sub, id, ...pairs] = positionals;
  if (sub !== 'get' && sub !== 'set') throw usage('outpost twin: get ID, or set ID PATH=VALUE... | --patch JSON');
  if (id === undefined) throw usage(`outpost twin ${sub}: give the device ID (outpost devices lists them)`);
  if (sub === 'get') {
    if (pairs.length > 0 || values.patch !== undefined) throw usage('outpost twin get takes one device ID (outpost twin set changes the desired state)');
    const api = await reach(connect, values);
    const body = await requestApi(api, 'GET', devicePath(id));
    print(values.json ? body : renderTwin(body as TwinView), values.json);
    return 0;
  }
  let patch: Record<string, unknown>;
  if (values.patch !== undefined) {
    if (pairs.length > 0) throw usage('outpost twin set: give PATH=VALUE pairs or --patch JSON, not both');
    patch = parsePatchOption(values.patch);
  } else {
    if (pairs.length === 0) throw usage('outpost twin set: give PATH=VALUE pairs (maxSpeed=12 mode=auto; PATH=null removes the direct value) or --patch JSON');
    patch = buildPatch(pairs);
  }
  const api = await reach(connect, values);
  const body = (await requestApi(api, 'PATCH', `${devicePath(id)}/desired`, patch)) as { version: number };
  print(values.json ? body : `${id}: desired version ${body.version}\n`, values.json);
  return 0;
}

async function callVerb(args: string[], connect: Connect): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...COMMON, payload: { type: 'string' }, 'timeout-ms': { type: 'string' }, wait: { type: 'boolean', default: false } },
  });
  const [device, method, ...extra] = positionals;
  if (device === undefined || method === undefined || extra.length > 0) throw usage('outpost call: give DEVICE and METHOD (outpost call pump-1 reboot --payload \'{"delayS":5}\')');
  let payload: unknown;
  if (values.payload !== undefined) {
    try {
      payload = JSON.parse(values.payload);
    } catch (err) {
      throw usage(`--payload: not JSON (${errorMessage(err)}); a text is quoted: --payload '"text"'`);
    }
  }
  let timeoutMs = 10_000;
  if (values['timeout-ms'] !== undefined) {
    timeoutMs = Number(values['timeout-ms']);
    if (!Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 300_000) throw usage(`--timeout-ms: expected an integer from 100 to 300000, got "${values['timeout-ms']}"`);
  }
  const api = await reach(connect, values);
  const body = (await requestApi(api, 'POST', `${devicePath(device)}/calls`, { method, ...(payload === undefined ? {} : { payload }), timeoutMs, wait: values.wait }, {
    // The gateway answers by the call's deadline; the request waits a little longer for that answer.
    timeoutMs: timeoutMs + 5000,
    refusal: (r) => callRefusal(device, r),
  })) as CallAnswer;
  print(values.json ? body : renderCallAnswer(body), values.json);
  return body.status >= 400 ? 1 : 0;
}

async function configurationsVerb(args: string[], connect: Connect): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: COMMON });
  if (positionals.length > 0) throw usage(`outpost configurations takes no arguments (got "${positionals.join(' ')}")`);
  const api = await reach(connect, values);
  const body = await requestApi(api, 'GET', '/api/v1/configurations');
  print(values.json ? body : renderConfigurations(body as ConfigurationList), values.json);
  return 0;
}

// ---- the API ------------------------------------------------------------------------------------

interface Api {
  readonly url: string;
  readonly fetch: FetchLike;
}

/** A refused request as the API answers it: `{error, kind?}` with its HTTP status. */
export interface Refused {
  readonly status: number;
  readonly error: string;
  readonly kind?: string | undefined;
  /** What was wrong with the request, one line each (an invalid config). */
  readonly problems?: readonly string[] | undefined;
}

async function reach(connect: Connect, args: ConnectionArgs): Promise<Api> {
  const api = await connect(args);
  // connect has said why (an unreadable token file, an invalid --config): nothing more to print.
  if (!api) throw new CliFailure(2, '');
  return api;
}

function devicePath(id: string): string {
  return `/api/v1/devices/${encodeURIComponent(id)}`;
}

/** One request to the API; its JSON answer, or a CliFailure naming what went wrong and what to do. */
export async function requestApi(
  api: Api,
  method: 'GET' | 'PATCH' | 'POST' | 'DELETE',
  path: string,
  body?: unknown,
  opts: { timeoutMs?: number; refusal?: (r: Refused) => string } = {},
): Promise<unknown> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let status: number;
  let text: string;
  try {
    const res = await api.fetch(`${api.url}${path}`, {
      method,
      // A state-changing request carries the JSON content type even without a body (the API's CSRF guard asks for it).
      ...(method === 'GET' ? {} : { headers: { 'content-type': 'application/json' } }),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    status = res.status;
    text = await res.text();
  } catch (err) {
    if ((err as { name?: unknown }).name === 'TimeoutError') throw new CliFailure(1, `no answer from the gateway at ${api.url} within ${timeoutMs / 1000} s`);
    throw new CliFailure(1, `cannot reach the gateway at ${api.url} (${errorMessage(err)}): is it running? Point the CLI at it with --config FILE, --url URL or OUTPOST_URL`);
  }
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    answer = undefined;
  }
  if (status >= 200 && status < 300) {
    if (answer === undefined) throw new CliFailure(1, `${method} ${path}: the gateway's answer is not JSON (is ${api.url} an Outpost gateway?)`);
    return answer;
  }
  const fields = (answer ?? {}) as { error?: unknown; kind?: unknown; problems?: unknown };
  const refused: Refused = {
    status,
    error: typeof fields.error === 'string' ? fields.error : text.trim().slice(0, 200) || `HTTP ${status}`,
    kind: typeof fields.kind === 'string' ? fields.kind : undefined,
    problems: Array.isArray(fields.problems) ? fields.problems.map(String) : undefined,
  };
  throw new CliFailure(1, opts.refusal?.(refused) ?? refusalLine(refused));
}

/** A refusal in one line with what to do; the API's own messages already name the field or scope. */
export function refusalLine(r: Refused): string {
  if (r.status === 404 && /^no device ".*" in the inventory$/.test(r.error)) return `${r.error} (outpost devices lists them)`;
  if (r.status === 401 || r.status === 403) return r.error;
  if (r.status >= 500) return `the gateway failed (HTTP ${r.status}): ${r.error}`;
  return `refused by the gateway (HTTP ${r.status}): ${r.error}${(r.problems ?? []).map((p) => `\n  ${p}`).join('')}`;
}

function callRefusal(device: string, r: Refused): string {
  switch (r.kind) {
    case 'offline':
      return `"${device}" is offline: --wait sends the call when it comes back, within --timeout-ms`;
    case 'timeout':
      return `${r.error}: the call may still run on the device; a longer --timeout-ms waits longer`;
    case 'busy':
      return `${r.error}: try again once calls in flight have ended`;
    default:
      return refusalLine(r);
  }
}

function print(body: unknown, json: boolean): void {
  process.stdout.write(json ? `${JSON.stringify(body, null, 2)}\n` : String(body));
}

// ---- arguments ----------------------------------------------------------------------------------

/** A value as `twin set` takes it: JSON when it parses (12, true, null, "12"), else the text itself (auto). */
export function parseValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * The merge patch (RFC 7396) of `PATH=VALUE` arguments: `alarm.high=80 mode=auto` gives
 * `{alarm: {high: 80}, mode: "auto"}`; `PATH=null` removes the direct value. A path given twice,
 * or inside another path's value, is a usage error. Key names are the gateway's to check.
 */
export function buildPatch(pairs: readonly string[]): Record<string, unknown> {
  // Without a prototype: a key "__proto__" stays a key, for the gateway to refuse by name.
  const patch = Object.create(null) as Record<string, unknown>;
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const path = eq > 0 ? pair.slice(0, eq) : '';
    const keys = path.split('.');
    if (eq <= 0 || keys.some((k) => k === '')) throw usage(`"${pair}": expected PATH=VALUE, e.g. maxSpeed=12, alarm.high=80, mode=auto (PATH=null removes the direct value)`);
    let node = patch;
    for (const [i, key] of keys.entries()) {
      const last = i === keys.length - 1;
      const held = node[key];
      const at = keys.slice(0, i + 1).join('.');
      if (last && held !== undefined) throw usage(`"${pair}": ${at} is given twice`);
      if (!last && held !== undefined && !isObject(held)) throw usage(`"${pair}": ${at} is given a value of its own (${at}=…)`);
      if (last) node[key] = parseValue(pair.slice(eq + 1));
      else node = (node[key] ??= Object.create(null)) as Record<string, unknown>;
    }
  }
  return patch;
}

function parsePatchOption(text: string): Record<string, unknown> {
  let patch: unknown;
  try {
    patch = JSON.parse(text);
  } catch (err) {
    throw usage(`--patch: not JSON (${errorMessage(err)})`);
  }
  if (!isObject(patch)) throw usage('--patch: expected a JSON object, a merge patch of the desired document ({"maxSpeed": 12})');
  return patch;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// ---- rendering ----------------------------------------------------------------------------------

type Scalar = string | number | boolean | null;
type Doc = { readonly [key: string]: Scalar | Doc };

interface DeviceRow {
  readonly id: string;
  readonly protocol: string;
  readonly source: string;
  readonly attributes: Readonly<Record<string, Scalar>>;
  readonly labels: Readonly<Record<string, string>>;
  readonly tags: Readonly<Record<string, Scalar>>;
  readonly firstSeen: number;
  readonly lastSeen: number;
  readonly online: boolean;
}
interface DeviceList {
  readonly devices: ReadonlyArray<DeviceRow & { desiredVersion: number; appliedVersion: number; configurations: readonly string[] }>;
}
interface TwinView extends DeviceRow {
  readonly desired: { readonly version: number; readonly document: Doc };
  readonly applied: { readonly version: number; readonly rejected: Readonly<Record<string, string>> };
  readonly reported: Doc;
  readonly bindings: Readonly<Record<string, string>>;
  readonly configurations: readonly string[];
}
interface Explained {
  readonly device: string;
  readonly properties: ReadonlyArray<{
    path: string;
    value: Scalar;
    source: string;
    overrides: ReadonlyArray<{ source: string; value: Scalar }>;
    reported?: Scalar;
    inSync: boolean;
    rejected?: string;
  }>;
}
interface CallAnswer {
  readonly id: string;
  readonly status: number;
  readonly payload?: unknown;
  readonly ms: number;
}
interface ConfigurationList {
  readonly configurations: ReadonlyArray<{ id: string; origin: string; version: number; priority: number; target: string; targeted: number; applied: number; pending: number; failed: number }>;
}

/** How long ago `at` was, from `now` (both ms since the epoch): "3 s ago", "5 min ago"; "never" for 0. */
export function ago(at: number, now: number): string {
  if (at <= 0) return 'never';
  // A gateway whose clock is ahead of this machine's: not "in 2 s".
  const s = Math.max(0, Math.floor((now - at) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

/**
 * A value as a table shows it: text bare unless it would read back as something else (then
 * quoted, as `twin set` needs it: "12" is text, 12 a number), the rest as JSON; "-" for none.
 */
export function showValue(v: unknown): string {
  if (v === undefined) return '-';
  if (typeof v !== 'string') return JSON.stringify(v);
  return v === '-' || v.trim() !== v || parseValue(v) !== v ? JSON.stringify(v) : v;
}

/** `k=v, …` sorted by key; labels are text only, so they are shown bare (`line=2`), the rest as showValue. */
const pairsOf = (m: Readonly<Record<string, unknown>>, text = false): string =>
  Object.keys(m).length === 0
    ? '-'
    : Object.entries(m)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => `${k}=${text ? String(v) : showValue(v)}`)
        .join(', ');
const listOf = (xs: readonly string[]): string => (xs.length === 0 ? '-' : xs.join(', '));
const yesNo = (b: boolean): string => (b ? 'yes' : 'no');
const when = (t: number): string => (t <= 0 ? 'never' : `${new Date(t).toISOString().slice(0, 19).replace('T', ' ')} UTC`);

/** The leaves of a document by dotted path, sorted. */
function leaves(doc: Doc, prefix = ''): Array<[string, Scalar]> {
  const out: Array<[string, Scalar]> = [];
  for (const [k, v] of Object.entries(doc)) {
    const path = prefix === '' ? k : `${prefix}.${k}`;
    if (v !== null && typeof v === 'object') out.push(...leaves(v, path));
    else out.push([path, v]);
  }
  return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function section(title: string, head: readonly string[], rows: readonly (readonly string[])[]): string {
  return `${title}\n${rows.length === 0 ? '(none)\n' : plainTable(head, rows)}`;
}

export function renderDeviceList(body: DeviceList, now: number): string {
  return plainTable(
    ['ID', 'PROTOCOL', 'MODEL', 'ONLINE', 'LAST SEEN', 'DESIRED/APPLIED', 'CONFIGURATIONS'],
    body.devices.map((d) => [
      d.id,
      d.protocol,
      showValue(d.attributes.model),
      yesNo(d.online),
      ago(d.lastSeen, now),
      d.desiredVersion === 0 && d.appliedVersion === 0 ? '-' : `v${d.desiredVersion}/v${d.appliedVersion}`,
      listOf(d.configurations),
    ]),
  );
}

export function renderDevice(d: TwinView, now: number): string {
  const identity: Array<[string, string]> = [
    ['ID', d.id],
    ['PROTOCOL', d.protocol],
    ['SOURCE', d.source],
    ['ONLINE', yesNo(d.online)],
    ['LAST SEEN', ago(d.lastSeen, now)],
    ['FIRST SEEN', when(d.firstSeen)],
    ['ATTRIBUTES', pairsOf(d.attributes)],
    ['LABELS', pairsOf(d.labels, true)],
    ['TAGS', pairsOf(d.tags)],
    ['CONFIGURATIONS', listOf(d.configurations)],
  ];
  if (Object.keys(d.bindings).length > 0) identity.push(['BINDINGS', Object.entries(d.bindings).map(([path, point]) => `${path} -> point ${point}`).join(', ')]);
  return `${plainTable([], identity)}\n${renderTwin(d)}`;
}

export function renderTwin(d: TwinView): string {
  const rejected = Object.entries(d.applied.rejected).sort(([a], [b]) => (a < b ? -1 : 1));
  return [
    section(`DESIRED (version ${d.desired.version}, applied ${d.applied.version})`, ['PROPERTY', 'VALUE'], leaves(d.desired.document).map(([p, v]) => [p, showValue(v)])),
    section('REPORTED', ['PROPERTY', 'VALUE'], leaves(d.reported).map(([p, v]) => [p, showValue(v)])),
    section('REJECTED', ['PROPERTY', 'REASON'], rejected),
  ].join('\n');
}

export function renderExplain(body: Explained): string {
  if (body.properties.length === 0) return `"${body.device}" has no desired properties (outpost twin set ${body.device} PATH=VALUE sets one)\n`;
  return plainTable(
    ['PROPERTY', 'VALUE', 'SOURCE', 'OVERRIDES', 'REPORTED', 'IN SYNC'],
    body.properties.map((p) => [
      p.path,
      showValue(p.value),
      p.source,
      p.overrides.length === 0 ? '-' : p.overrides.map((o) => `${o.source}=${showValue(o.value)}`).join(', '),
      showValue(p.reported),
      p.rejected !== undefined ? `no (rejected: ${p.rejected})` : yesNo(p.inSync),
    ]),
  );
}

export function renderCallAnswer(a: CallAnswer): string {
  return `status ${a.status} in ${a.ms} ms\n${a.payload === undefined ? '' : `${JSON.stringify(a.payload, null, 2)}\n`}`;
}

export function renderConfigurations(body: ConfigurationList): string {
  return plainTable(
    ['ID', 'ORIGIN', 'VERSION', 'PRIORITY', 'TARGETED', 'APPLIED', 'PENDING', 'FAILED', 'TARGET'],
    body.configurations.map((c) => [c.id, c.origin, String(c.version), String(c.priority), String(c.targeted), String(c.applied), String(c.pending), String(c.failed), c.target]),
    { right: [2, 3, 4, 5, 6, 7] },
  );
}
