'use strict';
const { hostOf, readingOf } = require('./host.cjs');

module.exports = function (RED) {
  function OutpostWindow(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    const spec = {
      kind: config.kind || 'tumbling',
      aggregates: String(config.aggregates || 'avg').split(',').map((s) => s.trim()).filter(Boolean),
      time: config.time || 'processing',
    };
    for (const k of ['windowMs', 'hopMs', 'gapMs', 'count', 'allowedLatenessMs']) if (config[k] !== undefined && config[k] !== '') spec[k] = Number(config[k]);
    let win;
    try {
      win = host.window(spec, (reading) => this.send({ topic: `${reading.device}/${reading.point}`, payload: reading.value, reading }));
    } catch (err) {
      this.error(`outpost window: ${err.message}`);
      this.status({ fill: 'red', shape: 'ring', text: 'invalid window' });
      return;
    }
    this.on('input', (msg, send, done) => {
      const r = readingOf(msg, { device: 'node-red', point: 'value' });
      win.process({ id: r.id || `${this.id}:${Date.now()}`, seq: r.seq || 0, quality: r.quality || 'good', ts: r.ts || Date.now(), device: r.device, point: r.point, value: r.value, unit: r.unit });
      done();
    });
    this.on('close', (done) => {
      win.close();
      done();
    });
  }
  RED.nodes.registerType('outpost window', OutpostWindow);
};
