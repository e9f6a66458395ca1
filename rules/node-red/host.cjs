'use strict';
/**
 * The gateway's side of the Outpost nodes: RED.settings.outpost (see runtime/node-red.ts,
 * OutpostNodeHost). Property access, not RED.settings.get(): that returns a copy.
 */
module.exports.hostOf = function hostOf(RED, node) {
  const host = RED.settings.outpost;
  if (!host) node.error('Outpost nodes run only in the Node-RED hosted by an Outpost gateway');
  return host;
};

/** A reading from a message: msg.reading (as `outpost in` sends it), else payload/topic. */
module.exports.readingOf = function readingOf(msg, defaults) {
  if (msg.reading && typeof msg.reading === 'object') return msg.reading;
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
