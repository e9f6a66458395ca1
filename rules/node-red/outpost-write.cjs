'use strict';
const { hostOf } = require('./host.cjs');

module.exports = function (RED) {
  function OutpostWrite(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    this.on('input', (msg, send, done) => {
      const device = config.device || msg.device;
      const point = config.point || msg.point;
      const value = msg.payload;
      if (!device || !point || !['number', 'boolean', 'string'].includes(typeof value)) {
        done(new Error('outpost write: needs a device, a point and a number, true/false or text in msg.payload'));
        return;
      }
      host.write(device, point, value).then(
        (result) => {
          this.status({ fill: 'green', shape: 'dot', text: `${point} = ${JSON.stringify(value)}` });
          send({ ...msg, payload: result });
          done();
        },
        (err) => {
          this.status({ fill: 'red', shape: 'ring', text: err.message });
          done(err);
        },
      );
    });
  }
  RED.nodes.registerType('outpost write', OutpostWrite);
};
