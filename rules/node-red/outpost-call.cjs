'use strict';
const { hostOf } = require('./host.cjs');

// As the API names methods and devices (nameSchema in runtime/contracts/twins.ts) and the editor checks them.
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const MIN_TIMEOUT_MS = 100;
const MAX_TIMEOUT_MS = 300000;

/** The node's properties checked once, at deploy; a list of problems naming the field. */
function settingsOf(config) {
  const problems = [];
  const timeoutMs = config.timeoutMs === undefined || config.timeoutMs === '' ? 10000 : Number(config.timeoutMs);
  if (!Number.isInteger(timeoutMs) || timeoutMs < MIN_TIMEOUT_MS || timeoutMs > MAX_TIMEOUT_MS) {
    problems.push(`timeoutMs: a whole number of ms from ${MIN_TIMEOUT_MS} to ${MAX_TIMEOUT_MS}, not ${JSON.stringify(config.timeoutMs)}`);
  }
  if (config.device && !NAME.test(config.device)) problems.push(`device: letters, digits, "_", "." and "-", not ${JSON.stringify(config.device)}`);
  if (config.method && !NAME.test(config.method)) problems.push(`method: letters, digits, "_", "." and "-", not ${JSON.stringify(config.method)}`);
  return { problems, timeoutMs, wait: config.wait === true || config.wait === 'true' };
}

module.exports = function (RED) {
  function OutpostCall(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    const { problems, timeoutMs, wait } = settingsOf(config);
    if (problems.length > 0) {
      const why = `outpost call: ${problems.join('; ')}`;
      this.error(why);
      this.status({ fill: 'red', shape: 'ring', text: `invalid: ${problems.join('; ')}`.slice(0, 120) });
      this.on('input', (msg, send, done) => done(new Error(why)));
      this.on('close', () => this.status({}));
      return;
    }
    let inFlight = 0;
    let last;
    // A call may settle after a redeploy closed this node: the node that replaced it (same id) keeps its own status.
    let closed = false;
    const show = () => {
      if (closed) return;
      if (inFlight > 0) this.status({ fill: 'blue', shape: 'dot', text: `${inFlight} in flight` });
      else if (last) this.status(last);
    };
    this.on('input', (msg, send, done) => {
      const device = config.device || (typeof msg.device === 'string' && msg.device) || (typeof msg.topic === 'string' && msg.topic) || '';
      const method = config.method || (typeof msg.method === 'string' && msg.method) || '';
      if (!NAME.test(device) || !NAME.test(method)) {
        last = { fill: 'red', shape: 'ring', text: 'no device or method' };
        show();
        done(new Error(`outpost call: needs a device (Device, msg.device or msg.topic) and a method (Method or msg.method) of letters, digits, "_", "." and "-", not ${JSON.stringify(device)} and ${JSON.stringify(method)}`));
        return;
      }
      inFlight++;
      show();
      host.call(device, method, msg.payload, { timeoutMs, wait }).then(
        (answer) => {
          inFlight--;
          last = { fill: answer.status < 400 ? 'green' : 'yellow', shape: 'dot', text: `${device} ${method}: ${answer.status} in ${answer.ms} ms` };
          show();
          send({ ...msg, device, method, payload: answer.payload, status: answer.status, ms: answer.ms });
          done();
        },
        (err) => {
          inFlight--;
          last = { fill: 'red', shape: 'ring', text: err.message };
          show();
          done(err);
        },
      );
    });
    // A redeployed node starts without the last status.
    this.on('close', () => {
      closed = true;
      this.status({});
    });
  }
  RED.nodes.registerType('outpost call', OutpostCall);
};
