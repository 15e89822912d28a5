// Starts the robustmq-edge binary for the WebSocket tests: one plain MQTT listener, one ws://
// and one wss:// listener, all on 127.0.0.1 port 0 (the bound ports are read from the broker's
// log), a fresh data folder and a self-signed certificate for 127.0.0.1 made with openssl.
// The binary is $ROBUSTMQ_EDGE_BIN, else target/debug/robustmq-edge of the workspace.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const workspace = resolve(here, '..', '..');

export function edgeBinary() {
  const bin = process.env.ROBUSTMQ_EDGE_BIN ||
    join(process.env.CARGO_TARGET_DIR || join(workspace, 'target'), 'debug', 'robustmq-edge');
  if (!existsSync(bin)) {
    throw new Error(`${bin} not found: build it first (cargo build -p robustmq-edge)`);
  }
  return bin;
}

/** A self-signed certificate for 127.0.0.1 and localhost: { cert, key, certFile, keyFile }. */
function makeCertificate(dir) {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}

/**
 * Starts the broker; resolves to { mqtt, ws, wss, cert, log(), stop() } with the ports once
 * every listener is bound. `extra` is appended to the configuration.
 */
export async function startBroker(extra = '') {
  const dir = mkdtempSync(join(tmpdir(), 'robustmq-edge-ws-'));
  const tls = makeCertificate(dir);
  const config = join(dir, 'edge.toml');
  writeFileSync(config, `data_dir = ${JSON.stringify(join(dir, 'data'))}
[[listeners]]
bind = "127.0.0.1:0"

[[listeners]]
bind = "127.0.0.1:0"
kind = "websocket"

[[listeners]]
bind = "127.0.0.1:0"
kind = "websocket"
[listeners.tls]
cert_file = ${JSON.stringify(tls.certFile)}
key_file = ${JSON.stringify(tls.keyFile)}
${extra}
`);
  const child = spawn(edgeBinary(), ['--config', config], {
    stdio: ['ignore', 'inherit', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  let log = '';
  const ports = await new Promise((resolvePorts, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start in 15 s:\n${log}`)), 15000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code}:\n${log}`));
    });
    child.stderr.on('data', (chunk) => {
      log += chunk.toString();
      const lines = log.split('\n');
      const plain = lines.find((l) => /listening for MQTT listen=/.test(l));
      const ws = lines.find((l) => /listening for MQTT over WebSocket .*tls=false/.test(l));
      const wss = lines.find((l) => /listening for MQTT over WebSocket .*tls=true/.test(l));
      if (plain && ws && wss && /broker started/.test(log)) {
        clearTimeout(timer);
        const port = (l) => Number(/listen=Some\([^)]*:(\d+)\)/.exec(l)[1]);
        resolvePorts({ mqtt: port(plain), ws: port(ws), wss: port(wss) });
      }
    });
  });
  child.removeAllListeners('exit');
  return {
    ...ports,
    cert: tls.cert,
    pid: child.pid,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
