'use strict';
/* global setInterval, clearInterval */
/**
 * The gateway's side of the Outpost nodes: RED.settings.outpost (see runtime/node-red.ts,
 * OutpostNodeHost). Property access, not RED.settings.get(): that returns a copy.
 */
module.exports.hostOf = function hostOf(RED, node) {
  const host = RED.settings.outpost;
  if (!host) node.error('Outpost nodes run only in the Node-RED hosted by an Outpost gateway');
  return host;
};

/**
 * A reading from a message, as core nodes treat messages: `msg.payload` is the value and
 * `msg.topic` ("device/point") the name, whatever `msg.reading` says; `msg.reading` (what `outpost
 * in` attaches) fills in the rest — device and point when the topic names none, the time, the unit,
 * the quality unless `msg.quality` is set — and its id, from which the output's id derives (`id`
 * of the input reading + "/" + `idSuffix` + "/" + point), so the cloud deduplicates a reading that a rule and a
 * flow, or a replay, send twice.
 */
module.exports.readingOf = function readingOf(msg, defaults, idSuffix) {
  if (msg.reading && typeof msg.reading === 'object') {
    const r = msg.reading;
    const named = typeof msg.topic === 'string' && msg.topic.includes('/') ? msg.topic.split('/', 2) : [r.device, r.point];
    const device = named[0] || r.device;
    const point = named[1] || r.point;
    return {
      device,
      point,
      value: msg.payload === undefined ? r.value : msg.payload,
      quality: msg.quality !== undefined ? msg.quality : r.quality,
      ts: typeof r.ts === 'number' ? r.ts : undefined,
      unit: msg.unit !== undefined ? msg.unit : r.unit,
      // One input may become several outputs (a function splitting it): the point keeps them apart.
      id: typeof r.id === 'string' && idSuffix ? `${r.id}/${idSuffix}/${point}` : undefined,
    };
  }
  const [device, point] = typeof msg.topic === 'string' && msg.topic.includes('/') ? msg.topic.split('/', 2) : [defaults.device, msg.topic || defaults.point];
  return {
    device: msg.device || device || defaults.device,
    point: msg.point || point || defaults.point,
    value: msg.payload === undefined ? null : msg.payload,
    quality: msg.quality,
    ts: typeof msg.ts === 'number' ? msg.ts : undefined,
    unit: msg.unit,
  };
};

/**
 * A node's status kept up to date without a status message per reading: `render()` (returning a
 * Node-RED status object) is asked once a second and shown when it changed. `stop()`, on close,
 * ends the timer and clears the status, so a redeployed node starts from a clean one.
 */
module.exports.liveStatus = function liveStatus(node, render, everyMs = 1000) {
  let shown = '';
  const show = () => {
    const status = render();
    const key = JSON.stringify(status);
    if (key === shown) return;
    shown = key;
    node.status(status);
  };
  show();
  const timer = setInterval(show, everyMs);
  if (typeof timer.unref === 'function') timer.unref();
  return {
    /** Shows the status now (after an event worth showing at once). */
    now: show,
    stop() {
      clearInterval(timer);
      node.status({});
    },
  };
};

/** "3 s", "2 min", "1 h" ago, for status lines. */
module.exports.ago = function ago(ms) {
  if (ms < 60_000) return `${Math.max(0, Math.round(ms / 1000))} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 3_600_000)} h`;
};
