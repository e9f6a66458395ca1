'use strict';
const { hostOf } = require('./host.cjs');

module.exports = function (RED) {
  function OutpostWrite(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    // The devices whose readings may drive this write (ids or patterns, comma separated); "*"
    // trusts every message, also ones no reading started (an inject, an HTTP request).
    const sources = String(config.sources || '')
      .split(/[\s,]+/)
      .filter((p) => p !== '');
    const patterns = sources.map((p) => new RegExp(`^${p.replace(/[\\^$.|+()[\]{}]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 's'));
    const trusted = (msg) => {
      if (sources.includes('*')) return true;
      const from = msg.reading && typeof msg.reading.device === 'string' ? msg.reading.device : undefined;
      return from !== undefined && patterns.some((re) => re.test(from));
    };
    this.on('input', (msg, send, done) => {
      if (!trusted(msg)) {
        const from = msg.reading && msg.reading.device;
        this.status({ fill: 'red', shape: 'ring', text: 'untrusted source' });
        done(new Error(sources.length === 0
          ? 'outpost write: name the devices whose readings may drive this write (Sources), or * to trust every message'
          : `outpost write: ${from ? `a reading from "${from}"` : 'a message without msg.reading'} is not from a trusted source (${sources.join(', ')})`));
        return;
      }
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
    // A redeployed node starts without the last status.
    this.on('close', () => this.status({}));
  }
  RED.nodes.registerType('outpost write', OutpostWrite);
};
