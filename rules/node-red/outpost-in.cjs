'use strict';
const { ago, hostOf, liveStatus } = require('./host.cjs');

/** Readings older than this make the status say they stopped. */
const QUIET_MS = 60_000;

module.exports = function (RED) {
  function OutpostIn(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    const what = `${config.device || '*'} / ${config.point || '*'}`;
    let count = 0;
    let lastAt = 0;
    const unsubscribe = host.subscribe({ device: config.device || '*', point: config.point || '*' }, (reading) => {
      count++;
      lastAt = Date.now();
      this.send({ topic: `${reading.device}/${reading.point}`, payload: reading.value, quality: reading.quality, reading });
    });
    // Whether readings arrive, at a glance: how many, how long ago the last one came.
    const status = liveStatus(this, () => {
      if (count === 0) return { fill: 'grey', shape: 'ring', text: `${what}: no readings yet` };
      const since = Date.now() - lastAt;
      if (since > QUIET_MS) return { fill: 'yellow', shape: 'ring', text: `${what}: none for ${ago(since)} (${count} in all)` };
      return { fill: 'green', shape: 'dot', text: `${what}: ${count} readings, last ${ago(since)} ago` };
    });
    this.on('close', (done) => {
      unsubscribe();
      status.stop();
      done();
    });
  }
  RED.nodes.registerType('outpost in', OutpostIn);
};
