// A proxyless gRPC client (grpc-js-xds) for Sextant's tests; same protocol
// as xds_client.py: TARGET PHASE [PHASE...], prints "ok PHASE" per phase; a
// phase NAMES@TARGET2 waits for a line on stdin, then calls TARGET2.
'use strict';
const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();

const [target, ...phases] = process.argv.slice(2);
let client = new grpc.Client(target, grpc.credentials.createInsecure());
const id = (x) => x;

function call() {
  return new Promise((resolve) => {
    client.makeUnaryRequest('/sextant.test.Echo/Say', id, id, Buffer.from('hi'),
      new grpc.Metadata(), { deadline: Date.now() + 5000 },
      (err, resp) => resolve(err ? { error: `${err.code}: ${err.details}` } : { name: resp.toString() }));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const lines = require('readline').createInterface({ input: process.stdin })[Symbol.asyncIterator]();

(async () => {
  for (const phase of phases) {
    const [names, other] = phase.split('@');
    if (other) {
      await lines.next();
      client.close();
      client = new grpc.Client(other, grpc.credentials.createInsecure());
    }
    const want = new Set(names.split(','));
    const recent = [];
    const deadline = Date.now() + 30000;
    let lastError = '';
    for (;;) {
      const r = await call();
      if (r.error) { lastError = r.error; await sleep(100); } else { recent.push(r.name); if (recent.length > 12) recent.shift(); }
      const got = new Set(recent);
      if (recent.length === 12 && got.size === want.size && [...want].every((n) => got.has(n))) {
        console.log(`ok ${phase}`);
        break;
      }
      if (Date.now() > deadline) {
        console.log(`fail ${phase}: recent=${JSON.stringify(recent)} error=${lastError}`);
        process.exit(1);
      }
      await sleep(20);
    }
  }
  client.close();
  process.exit(0);
})();
