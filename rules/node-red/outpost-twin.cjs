'use strict';
const { hostOf } = require('./host.cjs');

/** The device a message is about: the node's, else msg.device, else msg.topic. */
function deviceOf(config, msg) {
  if (config.device) return config.device;
  if (typeof msg.device === 'string' && msg.device) return msg.device;
  return typeof msg.topic === 'string' && msg.topic ? msg.topic : undefined;
}

module.exports = function (RED) {
  function OutpostTwin(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    const action = config.action === 'patch' ? 'patch' : 'get';
    this.on('input', (msg, send, done) => {
      const device = deviceOf(config, msg);
      if (!device) {
        done(new Error('outpost twin: name the device (the node\'s Device, msg.device or msg.topic)'));
        return;
      }
      if (action === 'patch' && (msg.payload === null || typeof msg.payload !== 'object' || Array.isArray(msg.payload))) {
        done(new Error('outpost twin: msg.payload must be an object: a merge patch of desired properties (null removes a direct value)'));
        return;
      }
      const work = action === 'patch' ? host.patchDesired(device, msg.payload) : host.twin(device);
      work.then(
        (result) => {
          this.status({ fill: 'green', shape: 'dot', text: action === 'patch' ? `${device} desired v${result.version}` : `${device} read` });
          send({ ...msg, device, payload: result });
          done();
        },
        (err) => {
          this.status({ fill: 'red', shape: 'ring', text: err.message });
          done(err);
        },
      );
    });
    // A redeployed node starts without the last status.
    this.on('close', () => this.status({}));
  }
  RED.nodes.registerType('outpost twin', OutpostTwin);
};
