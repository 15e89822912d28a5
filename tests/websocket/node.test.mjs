// MQTT.js (the npm package) from Node through the broker's ws:// and wss:// listeners:
// publish and subscribe at MQTT 3.1, 3.1.1 and 5.0, across the two listeners.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';
import { startBroker } from './broker.mjs';

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { await broker?.stop(); });

const connect = (url, opts = {}) => mqtt.connectAsync(url, {
  reconnectPeriod: 0, connectTimeout: 10000, ...opts,
});

/** Resolves with the first message on `client` (topic, payload as text). */
const nextMessage = (client) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no message within 10 s')), 10000);
  client.once('message', (topic, payload, packet) => {
    clearTimeout(timer);
    resolve({ topic, payload: payload.toString(), qos: packet.qos });
  });
});

/**
 * `sub` subscribes to `filter` (default: `topic`), `pub` publishes `payload` on `topic`, both at
 * QoS 1: `sub` gets exactly that at QoS 1. Both clients are closed afterwards.
 */
const roundTrip = async (sub, pub, topic, payload, filter = topic) => {
  await sub.subscribeAsync(filter, { qos: 1 });
  const got = nextMessage(sub);
  await pub.publishAsync(topic, payload, { qos: 1 });
  assert.deepEqual(await got, { topic, payload, qos: 1 });
  await pub.endAsync();
  await sub.endAsync();
};

test('MQTT.js over ws:// publishes and subscribes (3.1.1 and 5.0)', async () => {
  const url = `ws://127.0.0.1:${broker.ws}/mqtt`;
  for (const protocolVersion of [4, 5]) {
    const sub = await connect(url, { protocolVersion, clientId: `ws-sub-${protocolVersion}` });
    const pub = await connect(url, { protocolVersion, clientId: `ws-pub-${protocolVersion}` });
    await roundTrip(sub, pub, `node/ws/${protocolVersion}`, `hello v${protocolVersion}`, 'node/ws/#');
  }
});

test('MQTT.js over wss:// publishes and subscribes, the certificate verified', async () => {
  const url = `wss://127.0.0.1:${broker.wss}/mqtt`;
  const sub = await connect(url, { ca: broker.cert, clientId: 'wss-sub' });
  const pub = await connect(url, { ca: broker.cert, clientId: 'wss-pub', protocolVersion: 5 });
  await roundTrip(sub, pub, 'node/wss', 'secret');
});

test('MQTT.js refuses a wss:// server it cannot verify', async () => {
  await assert.rejects(connect(`wss://127.0.0.1:${broker.wss}/mqtt`, { clientId: 'no-ca' }));
});

test('MQTT 3.1 (subprotocol mqttv3.1) on ws:// reaches a 5.0 client on wss://', async () => {
  const sub = await connect(`wss://127.0.0.1:${broker.wss}/mqtt`, { ca: broker.cert, protocolVersion: 5, clientId: 'cross-sub' });
  const pub = await connect(`ws://127.0.0.1:${broker.ws}/mqtt`, {
    protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'cross-pub',
  });
  await roundTrip(sub, pub, 'node/cross', 'from 3.1');
});

test('a large payload (200 KiB) crosses in both directions', async () => {
  const url = `ws://127.0.0.1:${broker.ws}/mqtt`;
  const c = await connect(url, { clientId: 'big' });
  await c.subscribeAsync('node/big', { qos: 1 });
  const payload = 'x'.repeat(200 * 1024);
  const got = nextMessage(c);
  await c.publishAsync('node/big', payload, { qos: 1 });
  assert.equal((await got).payload.length, payload.length);
  await c.endAsync();
});
