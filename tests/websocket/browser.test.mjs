// MQTT.js in a page of headless chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// the page loads mqtt.min.js from node_modules through a small local static server, connects
// over ws:// and wss://, subscribes, publishes and receives its own message and one sent by a
// Node MQTT.js client through the broker. Screenshots of the page go to output/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync, mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { chromium } from 'playwright-core';
import { startBroker } from './broker.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

let broker;
let server;
let context;
let profile;
let pageUrl;

before(async () => {
  broker = await startBroker();
  const files = {
    '/': ['text/html', readFileSync(join(here, 'page.html'))],
    '/mqtt.min.js': ['text/javascript', readFileSync(join(here, 'node_modules', 'mqtt', 'dist', 'mqtt.min.js'))],
  };
  server = createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': f[0] }).end(f[1]);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  pageUrl = `http://127.0.0.1:${server.address().port}/`;
  profile = mkdtempSync(join(tmpdir(), 'robustmq-edge-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    // The broker's certificate is self-signed for the test.
    ignoreHTTPSErrors: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await context?.close();
  await new Promise((r) => (server ? server.close(r) : r()));
  await broker?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function browserRoundTrip(url, label) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(pageUrl);
  assert.equal(await page.evaluate(() => typeof mqtt.connect), 'function', 'mqtt.min.js loaded');
  const topic = `browser/${label}/echo`;
  const inbox = `browser/${label}/inbox`;
  const result = page.evaluate(([u, t, i]) => window.roundTrip(u, t, 'hello from the page', i), [url, topic, inbox]);
  // Once the page has subscribed, a Node client sends it a message through the broker.
  await page.waitForFunction(() => window.subscribed === true, null, { timeout: 10000 });
  const node = await mqtt.connectAsync(`ws://127.0.0.1:${broker.ws}/mqtt`, { reconnectPeriod: 0 });
  await node.publishAsync(inbox, `hello browser over ${label}`, { qos: 1 });
  await node.endAsync();
  const got = await result;
  assert.deepEqual(got, { [topic]: 'hello from the page', [inbox]: `hello browser over ${label}` });
  assert.deepEqual(errors, []);
  // What the page showed, for a look after a failure or a change (output/ is not committed).
  mkdirSync(join(here, 'output'), { recursive: true });
  await page.screenshot({ path: join(here, 'output', `browser-${label}.png`) });
  await page.close();
}

test('MQTT.js in headless chromium publishes and subscribes over ws://', async () => {
  await browserRoundTrip(`ws://127.0.0.1:${broker.ws}/mqtt`, 'ws');
});

test('MQTT.js in headless chromium publishes and subscribes over wss://', async () => {
  await browserRoundTrip(`wss://127.0.0.1:${broker.wss}/mqtt`, 'wss');
});

test('a browser WebSocket gets a clean close: 1000 after DISCONNECT, 1002 after a text frame', async () => {
  const page = await context.newPage();
  await page.goto(pageUrl);
  for (const url of [`ws://127.0.0.1:${broker.ws}/mqtt`, `wss://127.0.0.1:${broker.wss}/mqtt`]) {
    const bye = await page.evaluate(([u]) => window.bareWebSocket(u, 'disconnect'), [url]);
    assert.deepEqual(bye, { connack: [0x20, 2, 0, 0], code: 1000, reason: '', wasClean: true }, url);
    const text = await page.evaluate(([u]) => window.bareWebSocket(u, 'text'), [url]);
    assert.deepEqual(text, { connack: [0x20, 2, 0, 0], code: 1002, reason: 'MQTT needs binary frames', wasClean: true }, url);
  }
  await page.close();
});
