// The root helper: the daemon's op id reaches the helper's log, and a peer with the wrong uid
// is refused by the SO_PEERCRED check.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from 'node:net';
import { BangerClient } from '../../generated/client.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { startDaemon, type RunningDaemon } from '../../src/daemon/start.ts';
import { startHelper } from '../../src/helper/start.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { MemoryLog, waitForRecord } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const isRoot = process.getuid?.() === 0;

describe('daemon → helper', () => {
  const tmp = shortTempDir();
  const daemonLog = new MemoryLog();
  const helperLog = new MemoryLog();
  const helperSocket = join(tmp.dir, 'root', 'helper.sock');
  const daemonSocket = join(tmp.dir, 'd.sock');
  let helper: { server: Server };
  let daemon: RunningDaemon;

  beforeAll(async () => {
    execFileSync(process.execPath, [
      fileURLToPath(new URL('../../scripts/build-addon.mjs', import.meta.url)),
    ]);
    chmodSync(tmp.dir, 0o755);
    helper = await startHelper({
      socket: helperSocket,
      ownerUid: process.getuid!(),
      log: createLogger({ name: 'bangerd-root', stream: helperLog }),
    });
    daemon = await startDaemon({
      socket: daemonSocket,
      stateDir: join(tmp.dir, 'state'),
      config: DEFAULT_CONFIG,
      helperSocket,
      logStream: daemonLog,
    });
  });
  afterAll(async () => {
    await daemon.stop('test');
    helper.server.close();
    tmp.cleanup();
  });

  it("daemon.status carries the daemon's op id into the helper's log", async () => {
    const client = new BangerClient(new SocketTransport(daemonSocket));
    const status = await client.daemon.status();
    expect(status.helper).toMatchObject({ configured: true, reachable: true, uid: process.getuid!() });
    const done = await waitForRecord(
      daemonLog,
      (r) => r.msg === 'rpc completed' && r.method === 'daemon.status',
    );
    const opId = done.op_id!;
    const h = await waitForRecord(helperLog, (r) => r.msg === 'helper rpc completed' && r.op_id === opId);
    expect(h.method).toBe('priv.ping');
    expect(typeof h.duration_ms).toBe('number');
    expect(
      helperLog.records().filter((r) => r.op_id === opId && r.msg.startsWith('helper rpc')),
    ).toHaveLength(1);
  });

  it('the helper socket belongs to the owner with mode 0600', async () => {
    const { statSync } = await import('node:fs');
    const st = statSync(helperSocket);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(process.getuid!());
  });

  it.skipIf(!isRoot)(
    'refuses a peer whose uid is not the daemon\'s, with a "helper rpc failed" line',
    async () => {
      // The socket mode alone would stop this uid at connect(); open it up to prove the
      // peer-credential check refuses it on its own.
      chmodSync(helperSocket, 0o666);
      const script = `
      const s = require('node:net').connect(${JSON.stringify(helperSocket)});
      let b = '';
      s.on('connect', () => s.write(JSON.stringify({ version: 1, method: 'priv.ping', op_id: 'op-0badc0de' }) + '\\n'));
      s.on('data', (d) => (b += d));
      s.on('close', () => process.stdout.write(b));
      s.on('error', (e) => { process.stdout.write('ERR ' + e.message); });`;
      // Asynchronous spawn: the helper serves from this very process.
      const r = await new Promise<{ status: number | null; stdout: string }>((resolve) => {
        const p = spawn('setpriv', [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          '-e',
          script,
        ]);
        let stdout = '';
        p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        p.stderr.on('data', (d: Buffer) => (stdout += d.toString()));
        p.on('close', (status) => resolve({ status, stdout }));
      });
      expect(r.status).toBe(0);
      expect(r.stdout).not.toMatch(/^ERR/);
      const resp = JSON.parse(r.stdout.trim()) as {
        ok: boolean;
        error: { code: string; message: string; op_id: string };
      };
      expect(resp.ok).toBe(false);
      expect(resp.error.code).toBe('unauthorized');
      expect(resp.error.message).toMatch(/uid 65534 is not allowed/);
      expect(resp.error.op_id).toBe('op-0badc0de');
      const failed = await waitForRecord(
        helperLog,
        (x) => x.msg === 'helper rpc failed' && x.op_id === 'op-0badc0de',
      );
      expect(failed.code).toBe('unauthorized');
      expect(failed.method).toBe('priv.ping');
      chmodSync(helperSocket, 0o600);
    },
  );
});
