'use strict';
const { ago, hostOf, liveStatus, readingOf } = require('./host.cjs');

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
    for (const k of ['windowMs', 'hopMs', 'gapMs', 'count', 'allowedLatenessMs', 'precision']) if (config[k] !== undefined && config[k] !== '') spec[k] = Number(config[k]);
    let win;
    let last;
    let status;
    try {
      win = host.window(spec, (reading) => {
        last = { reading, at: Date.now() };
        this.send({ topic: `${reading.device}/${reading.point}`, payload: reading.value, reading });
        status.now();
      });
    } catch (err) {
      // The gateway's own check of a window rule, naming each field it refuses.
      this.error(`outpost window: ${err.message}`);
      this.status({ fill: 'red', shape: 'ring', text: `invalid: ${err.message}`.slice(0, 120) });
      this.on('close', (done) => {
        this.status({});
        done();
      });
      return;
    }
    // Open windows and the last output: what the window is doing, without a debug node.
    status = liveStatus(this, () => {
      const open = win.open();
      const text = `${open} open`;
      if (!last) return { fill: open > 0 ? 'blue' : 'grey', shape: 'ring', text: `${text} · no output yet` };
      const { reading, at } = last;
      return { fill: 'green', shape: 'dot', text: `${text} · last ${reading.point}=${reading.value} ${ago(Date.now() - at)} ago` };
    });
    this.on('input', (msg, send, done) => {
      const r = readingOf(msg, { device: 'node-red', point: 'value' });
      win.process({ id: r.id || `${this.id}:${Date.now()}`, seq: r.seq || 0, quality: r.quality || 'good', ts: r.ts || Date.now(), device: r.device, point: r.point, value: r.value, unit: r.unit });
      done();
    });
    this.on('close', (done) => {
      win.close();
      status.stop();
      done();
    });
  }
  RED.nodes.registerType('outpost window', OutpostWindow);
};
