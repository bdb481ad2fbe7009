// Sequential pins with the official Periskope Node.js client, for make bench.
//
//   node pin.js WARMUP N [ID_PREFIX]
//
// The client is built with env: 'local', which it maps to the fixed base URL
// http://localhost:8080/v1; bench/bench.lua makes the local server listen
// there too. When BENCH_BASE_URL names another base URL (port 8080 was
// taken), the client's fetch is pointed at it by rewriting that prefix: the
// client's own code path is otherwise unchanged.
//
// Key and phone come from PERISKOPE_API_KEY and PERISKOPE_PHONE. Prints one
// line: "node pins=<N> ok=<204s> seconds=<s> cpu=<s>".
'use strict';

const LOCAL = 'http://localhost:8080/v1';
const target = process.env.BENCH_BASE_URL;
if (target && target !== LOCAL) {
  const realFetch = globalThis.fetch;
  globalThis.fetch = (input, init) => {
    if (input instanceof Request && input.url.startsWith(LOCAL)) {
      input = new Request(target + input.url.slice(LOCAL.length), input);
    } else if (typeof input === 'string' && input.startsWith(LOCAL)) {
      input = target + input.slice(LOCAL.length);
    }
    return realFetch(input, init);
  };
}

const { PeriskopeApi } = require('@periskope/periskope-client');

async function run(client, prefix, first, count) {
  let ok = 0;
  for (let i = first; i < first + count; i++) {
    const res = await client.message.pin({ message_id: prefix + i, pin: true });
    if (res.status === 204) ok++;
  }
  return ok;
}

async function main() {
  const warmup = Number(process.argv[2] || 100);
  const n = Number(process.argv[3] || 1000);
  const prefix = process.argv[4] || 'node-';
  const client = new PeriskopeApi({
    authToken: process.env.PERISKOPE_API_KEY,
    phone: process.env.PERISKOPE_PHONE,
    env: 'local',
  });
  await run(client, prefix, 0, warmup);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const ok = await run(client, prefix, warmup, n);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  console.log(`node pins=${n} ok=${ok} seconds=${seconds.toFixed(6)} ` +
              `cpu=${((cpu.user + cpu.system) / 1e6).toFixed(6)}`);
  process.exitCode = ok === n ? 0 : 1;
}

main().catch((err) => {
  console.error('node: ' + (err && err.stack ? err.stack : err) + (err && err.cause ? ' (cause: ' + err.cause + ')' : ''));
  process.exitCode = 2;
});
