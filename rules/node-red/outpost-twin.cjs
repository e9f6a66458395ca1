'use strict';
const { hostOf } = require('./host.cjs');

/** The device a message is about: the node's, else msg.device, else msg.topic. */
function deviceOf(config, msg) {
  if (config.device) return config.device;
  if (typeof msg.device === 'string' && msg.device) return msg.device;
  return typeof msg.topic === 'string' && msg.topic ? msg.topic : undefined;
}

/** "desired v3, applied v2" from a twin as the registry shows it. */
function versions(twin) {
  const desired = twin && twin.desired && twin.desired.version;
  const applied = twin && twin.applied && twin.applied.version;
  return typeof applied === 'number' ? `desired v${desired}, applied v${applied}` : `desired v${desired}`;
}

module.exports = function (RED) {
  function OutpostTwin(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    const action = config.action === 'patch' ? 'patch' : 'get';
    // A redeployed node starts without the last status, and one settling late does not bring it back.
    let closed = false;
    const show = (status) => {
      if (!closed) this.status(status);
    };
    this.on('input', (msg, send, done) => {
      const device = deviceOf(config, msg);
      const fail = (err) => {
        show({ fill: 'red', shape: 'ring', text: err.message });
        done(err);
      };
      if (!device) {
        fail(new Error('outpost twin: name the device (the node\'s Device, msg.device or msg.topic)'));
        return;
      }
      if (action === 'patch' && (msg.payload === null || typeof msg.payload !== 'object' || Array.isArray(msg.payload))) {
        fail(new Error('outpost twin: msg.payload must be an object: a merge patch of desired properties (null removes a direct value)'));
        return;
      }
      const work = action === 'patch' ? host.patchDesired(device, msg.payload) : host.twin(device);
      work.then(
        (result) => {
          show({ fill: 'green', shape: 'dot', text: action === 'patch' ? `${device}: desired v${result.version}` : `${device}: ${versions(result)}` });
          send({ ...msg, device, payload: result });
          done();
        },
        fail,
      );
    });
    this.on('close', () => {
      closed = true;
      this.status({});
    });
  }
  RED.nodes.registerType('outpost twin', OutpostTwin);
};
