// The Outpost status page: one snapshot a second from /api/v1/status/stream (Server-Sent Events read
// with fetch, so the API token goes in the Authorization header), drawn with the DOM (text only:
// device names, points and problems come from the site and are never parsed as HTML).
'use strict';

const TOKEN_KEY = 'outpost-status-token';
const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  return e;
}

const badge = (text, cls) => el('span', { class: `badge ${cls || text}` }, text);

function fmtValue(v) {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'number') return Number.isInteger(v) ? v.toLocaleString('en-US') : v.toLocaleString('en-US', { maximumFractionDigits: 3 });
  return String(v);
}

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A small trend line of the values, as an inline SVG. */
function sparkline(values) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', 'trend');
  svg.setAttribute('viewBox', '0 0 100 24');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('aria-hidden', 'true');
  if (values.length > 1) {
    const min = Math.min(...values);
    const max = Math.max(...values);
    const span = max - min || 1;
    const pts = values.map((v, i) => `${((i / (values.length - 1)) * 100).toFixed(1)},${(22 - ((v - min) / span) * 20).toFixed(1)}`);
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(line);
  }
  return svg;
}

function table(head, rows, numeric) {
  return el(
    'div',
    { class: 'table-wrap' },
    el('table', {}, el('thead', {}, el('tr', {}, head.map((h, i) => el('th', { class: numeric && numeric.includes(i) ? 'num' : undefined }, h)))), el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c, i) => el('td', { class: numeric && numeric.includes(i) ? 'num' : undefined }, c)))))),
  );
}

function bar(share) {
  const pct = Math.max(0, Math.min(100, Math.round(share * 100)));
  const fill = el('span', {});
  fill.style.width = `${pct}%`; // through the CSSOM: the page's CSP allows no style attributes
  return el('span', { class: 'bar', title: `${pct} %` }, fill);
}

let previous; // the snapshot before, for rates

function renderDevices(s) {
  const drivers = (s.status.drivers || []).flatMap((d) => d.devices || []);
  const breakers = new Map(drivers.map((d) => [d.device, d.breaker]));
  const cards = s.devices.map((d) => {
    const worst = d.points.some((p) => p.quality === 'bad') ? 'bad' : d.points.some((p) => p.quality === 'stale') ? 'stale' : 'good';
    const newest = Math.max(...d.points.map((p) => p.ts));
    return el(
      'div',
      { class: 'card', 'data-device': d.device },
      el('h3', {}, el('span', {}, d.device), badge(breakers.get(d.device) === 'open' ? 'open' : worst)),
      el('p', { class: 'muted' }, `last reading ${ago(s.at - newest)} ago`),
      d.points.map((p) =>
        el(
          'div',
          { class: 'point', 'data-point': p.point },
          el('span', { class: 'name', title: p.point }, p.point),
          el('span', { class: `value ${p.quality}` }, `${fmtValue(p.value)}${p.unit ? ` ${p.unit}` : ''}${p.quality === 'good' ? '' : ` (${p.quality})`}`),
          sparkline(p.trend),
        ),
      ),
    );
  });
  $('devices').replaceChildren(...(cards.length ? cards : [el('p', { class: 'muted' }, 'No readings yet.')]));
}

function renderOutbox(s) {
  const st = s.status;
  const link = st.link;
  $('link').replaceWith(el('span', { id: 'link', class: `badge ${link}` }, `cloud ${link}`));
  const failing = st.uplink && st.uplink.failing ? el('p', { class: 'problem' }, `failing since ${ago(s.at - st.uplink.failing.since)}: ${st.uplink.failing.reason}`) : null;
  const refused = st.uplink && st.uplink.refused ? el('p', { class: 'problem' }, `the cloud broker refuses the gateway: ${st.uplink.refused}`) : null;
  const rows = (st.outbox.streams || []).map((x) => [x.stream, String(x.priority), fmtValue(x.depth), s.oldest[x.stream] ? ago(s.at - s.oldest[x.stream]) : '–', fmtValue(x.delivered), fmtValue(x.dropped), fmtValue(x.expired), fmtValue(x.deadLettered)]);
  $('outbox').replaceChildren(
    ...[failing, refused].filter(Boolean),
    el('p', { class: 'muted' }, `queued: ${fmtValue(st.outbox.depth)} · ${fmtValue(st.outbox.delivered)} delivered · sent today ${fmtValue(Math.round(((st.uplink && st.uplink.sentToday) || 0) / 1024))} KiB${st.uplink && st.uplink.broker ? ` · broker ${st.uplink.broker}` : ''}`),
    table(['stream', 'priority', 'depth', 'oldest', 'delivered', 'dropped', 'expired', 'dead-lettered'], rows, [1, 2, 4, 5, 6, 7]),
  );
}

function renderBuses(s) {
  const buses = (s.status.drivers || []).filter((d) => typeof d.connected === 'boolean');
  if (buses.length === 0) return $('buses').replaceChildren(el('p', { class: 'muted' }, 'No Modbus bus configured.'));
  const rows = buses.flatMap((b) =>
    (b.devices || []).map((d) => [b.connection || b.name, b.connected ? badge('up') : badge('down'), d.device, badge(d.breaker), fmtValue(d.polls), fmtValue(d.errors), d.lastError || b.lastConnectError || '']),
  );
  $('buses').replaceChildren(table(['bus', 'link', 'device', 'breaker', 'polls', 'errors', 'last error'], rows, [4, 5]));
}

function renderRules(s) {
  const rules = s.status.rules || [];
  if (rules.length === 0) return $('rules').replaceChildren(el('p', { class: 'muted' }, 'No rules.'));
  const before = new Map(((previous && previous.status.rules) || []).map((r) => [r.rule, r]));
  const dt = previous ? (s.at - previous.at) / 1000 : 0;
  const rows = rules.map((r) => {
    const b = before.get(r.rule);
    const rate = b && dt > 0 ? (r.passed - b.passed) / dt : undefined;
    return [r.rule, r.type, rate === undefined ? '–' : `${rate.toFixed(1)}/s`, fmtValue(r.passed), fmtValue(r.errors), r.lastError || ''];
  });
  $('rules').replaceChildren(table(['rule', 'type', 'rate', 'passed', 'errors', 'last error'], rows, [2, 3, 4]));
}

function renderOta(s) {
  const ota = s.status.ota;
  const rollouts = (ota && ota.rollouts) || [];
  if (rollouts.length === 0) return $('ota').replaceChildren(el('p', { class: 'muted' }, ota ? 'No rollout.' : 'OTA is not configured.'));
  $('ota').replaceChildren(
    ...rollouts.map((r) =>
      el(
        'div',
        { class: 'card' },
        el('h3', {}, el('span', {}, `${r.release} (${r.version})`), badge(r.state)),
        r.detail ? el('p', { class: 'muted' }, r.detail) : null,
        table(
          ['phase', 'share', 'devices', 'done', 'failed', 'progress'],
          r.phases.map((p, i) => [String(i + 1), `${p.share} %`, String(p.devices), String(p.succeeded), String(p.failed), bar(p.devices ? (p.succeeded + p.failed) / p.devices : 0)]),
          [1, 2, 3, 4],
        ),
      ),
    ),
  );
}

function renderProblems(s) {
  const items = s.problems.recent.map((p) => el('li', { class: p.level === 'warn' ? '' : 'problem' }, el('span', { class: 'when' }, `${ago(s.at - p.time)} ago`), `${p.msg}${p.where ? ` (${p.where})` : ''}${p.detail ? ` — ${p.detail}` : ''}`));
  const dl = s.deadLetters;
  $('problems').replaceChildren(
    el('p', { class: 'muted' }, `${fmtValue(s.problems.total)} warnings and errors since start · ${fmtValue(dl.count)} dead letters`),
    ...(dl.recent.length ? [table(['dead letter', 'stream', 'device', 'point', 'reason', 'when'], dl.recent.map((d) => [String(d.id), d.stream, d.device || '', d.point || '', d.reason, `${ago(s.at - d.failedAt)} ago`]))] : []),
    items.length ? el('ul', { class: 'problems' }, items) : el('p', { class: 'muted' }, 'No recent problems.'),
  );
}

function render(s) {
  $('gateway').textContent = s.status.gateway;
  const st = s.status;
  $('summary').textContent = `up ${ago(st.uptimeS * 1000)} · ${fmtValue(st.readingsIn)} readings in · ${st.siteBroker ? `site broker ${st.siteBroker.state}` : `${st.children ? st.children.connected : 0} children connected`}${st.config && st.config.version ? ` · config version ${st.config.version}` : ''}${st.memory ? ` · ${st.memory.rss} MiB` : ''}`;
  renderDevices(s);
  renderOutbox(s);
  renderBuses(s);
  renderRules(s);
  renderOta(s);
  renderProblems(s);
  previous = s;
  $('conn').textContent = `live · updated ${new Date(s.at).toLocaleTimeString()}`;
}

let abort;

function showLogin(message) {
  if (abort) abort.abort();
  $('view').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

async function follow(token) {
  abort = new AbortController();
  const res = await fetch('/api/v1/status/stream', { headers: { authorization: `Bearer ${token}` }, signal: abort.signal, cache: 'no-store' });
  if (res.status === 401 || res.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    let why = `HTTP ${res.status}`;
    try {
      why = (await res.json()).error || why;
    } catch {
      // keep the status
    }
    showLogin(`Refused: ${why}`);
    return false;
  }
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
  $('login').hidden = true;
  $('view').hidden = false;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return true;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = event
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      if (data) render(JSON.parse(data));
    }
  }
}

async function run() {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return showLogin();
    const opened = Date.now();
    try {
      if (!(await follow(token))) return;
      // The gateway ends each stream after a minute (the token is checked again on the next one):
      // open the next at once, unless this one ended early.
      if (Date.now() - opened > 5000) continue;
    } catch (err) {
      if (err && err.name === 'AbortError') return;
      $('conn').textContent = `gateway unreachable (${err && err.message ? err.message : err}); retrying…`;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  run();
});
$('signout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});
run();
