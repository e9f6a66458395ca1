'use strict';
const { hostOf } = require('./host.cjs');

const NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

module.exports = function (RED) {
  function OutpostCall(config) {
    RED.nodes.createNode(this, config);
    const host = hostOf(RED, this);
    if (!host) return;
    const timeoutMs = Number(config.timeoutMs) || 10000;
    const wait = config.wait === true || config.wait === 'true';
    let inFlight = 0;
    let last;
    const show = () => {
      if (inFlight > 0) this.status({ fill: 'blue', shape: 'dot', text: `${inFlight} in flight` });
      else if (last) this.status(last);
    };
    this.on('input', (msg, send, done) => {
      const device = config.device || (typeof msg.device === 'string' && msg.device) || (typeof msg.topic === 'string' && msg.topic) || '';
      const method = config.method || (typeof msg.method === 'string' && msg.method) || '';
      if (!NAME.test(device) || !NAME.test(method)) {
        done(new Error('outpost call: needs a device (Device, msg.device or msg.topic) and a method (Method or msg.method): letters, digits, "_.:-"'));
        return;
      }
      inFlight++;
      show();
      host.call(device, method, msg.payload, { timeoutMs, wait }).then(
        (answer) => {
          inFlight--;
          last = { fill: answer.status < 400 ? 'green' : 'yellow', shape: 'dot', text: `${method}: ${answer.status} in ${answer.ms} ms` };
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
    this.on('close', () => this.status({}));
  }
  RED.nodes.registerType('outpost call', OutpostCall);
};
