// Broker RSS per idle connection over plain MQTT, ws:// and wss:// (not a test; run by hand):
//   ROBUSTMQ_EDGE_BIN=target/release/robustmq-edge node tests/websocket/measure-memory.mjs 2000
// Each kind gets a fresh broker; N MQTT.js clients connect and stay idle, RSS is read from /proc.
import { startBroker } from './broker.mjs';
import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';
const N = Number(process.argv[2] || 1000);
const sleep = (ms) => new Promise(r => setTimeout(r, ms));
for (const kind of ['mqtt', 'ws', 'wss']) {
  const b = await startBroker('[limits]\nmax_connections_per_ip = 20000\n');
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${b.pid}/status`, 'utf8'))[1]);
  const url = kind === 'mqtt' ? `mqtt://127.0.0.1:${b.mqtt}` : `${kind}://127.0.0.1:${b[kind]}/mqtt`;
  const opts = { reconnectPeriod: 0, keepalive: 600, ca: b.cert };
  const first = await mqtt.connectAsync(url, opts);
  await sleep(500);
  const before = rss();
  const cs = [];
  for (let i = 0; i < N; i += 50) {
    cs.push(...await Promise.all(Array.from({ length: 50 }, () => mqtt.connectAsync(url, opts))));
  }
  await sleep(1500);
  const after = rss();
  console.log(`${kind}: ${N} idle connections, broker RSS ${before} -> ${after} KiB, ${((after - before) * 1024 / N).toFixed(0)} bytes each`);
  await Promise.all([first, ...cs].map(c => c.endAsync()));
  await b.stop();
}
