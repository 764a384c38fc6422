// A proxyless gRPC client (grpc-js-xds) measuring what rules do; the same
// protocol as rules_client.py: one JSON command per line on stdin, one JSON
// result per line on stdout.
'use strict';
const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();

const id = (x) => x;
const names = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));
const clients = new Map();

function call(client, metadata, deadline) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    client.makeUnaryRequest('/sextant.test.Echo/Say', id, id, Buffer.from('hi'), md,
      { deadline: Date.now() + deadline * 1000 },
      (err, resp) => resolve(err ? names[err.code] : resp.toString()));
  });
}

const lines = require('readline').createInterface({ input: process.stdin });
const queue = [];
let busy = false;
lines.on('line', (line) => { queue.push(JSON.parse(line)); run(); });
lines.on('close', () => { queue.push(null); run(); });

async function run() {
  if (busy) return;
  busy = true;
  while (queue.length > 0) {
    const cmd = queue.shift();
    if (cmd === null) { for (const c of clients.values()) c.close(); process.exit(0); }
    if (!clients.has(cmd.target)) clients.set(cmd.target, new grpc.Client(cmd.target, grpc.credentials.createInsecure()));
    const client = clients.get(cmd.target);
    const counts = {};
    let slowest = 0; let fastest = null;
    for (let i = 0; i < cmd.calls; i++) {
      const start = process.hrtime.bigint();
      const key = await call(client, cmd.metadata || {}, cmd.deadline || 5);
      const took = Number(process.hrtime.bigint() - start) / 1e6;
      slowest = Math.max(slowest, took);
      fastest = fastest === null ? took : Math.min(fastest, took);
      counts[key] = (counts[key] || 0) + 1;
    }
    console.log(JSON.stringify({ counts, max_ms: slowest, min_ms: fastest || 0 }));
  }
  busy = false;
}
