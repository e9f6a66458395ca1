'use strict';
const { hostOf, readingOf } = require('./host.cjs');

module.exports = function (RED) {
  function OutpostOut(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    const stream = config.stream || 'telemetry';
    let sent = 0;
    this.on('input', (msg, send, done) => {
      const reading = readingOf(msg, { device: config.device || 'node-red', point: config.point || 'value' }, `nr:${this.id}`);
      // done() only once the reading is committed to the outbox: Node-RED's completion then means durable.
      host.send(reading, stream).then(
        (envelope) => {
          sent++;
          this.status({ fill: 'green', shape: 'dot', text: `${sent} sent to ${stream}` });
          send({ ...msg, reading: envelope });
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
  RED.nodes.registerType('outpost out', OutpostOut);
};
