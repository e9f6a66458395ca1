'use strict';
const { hostOf } = require('./host.cjs');

module.exports = function (RED) {
  function OutpostIn(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    const unsubscribe = host.subscribe({ device: config.device || '*', point: config.point || '*' }, (reading) => {
      this.send({ topic: `${reading.device}/${reading.point}`, payload: reading.value, quality: reading.quality, reading });
    });
    this.status({ fill: 'green', shape: 'dot', text: `${config.device || '*'} / ${config.point || '*'}` });
    this.on('close', (done) => {
      unsubscribe();
      done();
    });
  }
  RED.nodes.registerType('outpost in', OutpostIn);
};
