import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { VmLaunchSpec, VmmEvent } from '../../src/engine/driver.ts';
import { EngineError } from '../../src/engine/errors.ts';
import {
  buildFirecrackerArgv,
  buildFirecrackerRequests,
  fcPause,
  fcSendCtrlAltDel,
  firecrackerBootArgs,
  firecrackerInstanceId,
  prepareFirecrackerPlan,
} from '../../src/engine/firecracker-api.ts';
import {
  configureAndBoot,
  detectFirecracker,
  FirecrackerDriver,
  firecrackerCall,
} from '../../src/engine/firecracker.ts';

function spec(over: Partial<VmLaunchSpec> = {}): VmLaunchSpec {
  return {
    id: 'vm1',
    vmDir: '/var/lib/banger/vms/vm1',
    kernel: '/k/vmlinux',
    cmdline: 'root=/dev/vda rw',
    vcpus: 2,
    memoryMiB: 1024,
    disks: [
      { path: '/d/root.ext4', format: 'raw' },
      { path: '/d/seed.ext4', format: 'raw', readOnly: true },
    ],
    net: { mode: 'tap', tap: 'bgtap3', mac: '52:54:00:00:00:03' },
    serialLog: '/var/lib/banger/vms/vm1/serial.log',
    agentSocket: '/var/lib/banger/vms/vm1/agent.sock',
    accel: 'kvm',
    ...over,
  };
}

describe('Firecracker request builder (pure)', () => {
  it('builds the documented configuration calls in order', () => {
    expect(buildFirecrackerRequests(spec({ initrd: '/k/initrd' }))).toEqual([
      { method: 'PUT', path: '/machine-config', body: { vcpu_count: 2, mem_size_mib: 1024 } },
      {
        method: 'PUT',
        path: '/boot-source',
        body: {
          kernel_image_path: '/k/vmlinux',
          boot_args: 'root=/dev/vda rw console=ttyS0 reboot=k panic=1 pci=off',
          initrd_path: '/k/initrd',
        },
      },
      {
        method: 'PUT',
        path: '/drives/disk0',
        body: { drive_id: 'disk0', path_on_host: '/d/root.ext4', is_root_device: false, is_read_only: false },
      },
      {
        method: 'PUT',
        path: '/drives/disk1',
        body: { drive_id: 'disk1', path_on_host: '/d/seed.ext4', is_root_device: false, is_read_only: true },
      },
      {
        method: 'PUT',
        path: '/network-interfaces/net0',
        body: { iface_id: 'net0', host_dev_name: 'bgtap3', guest_mac: '52:54:00:00:00:03' },
      },
      {
        method: 'PUT',
        path: '/vsock',
        body: { guest_cid: 3, uds_path: '/var/lib/banger/vms/vm1/agent.sock' },
      },
    ]);
  });

  it('omits what the spec does not ask for', () => {
    const reqs = buildFirecrackerRequests(spec({ net: { mode: 'none' }, agentSocket: undefined, disks: [] }));
    expect(reqs.map((r) => r.path)).toEqual(['/machine-config', '/boot-source']);
    expect(reqs[1]!.body).not.toHaveProperty('initrd_path');
  });

  it('argv: api socket, sanitized instance id, log file', () => {
    expect(buildFirecrackerArgv(spec({ id: 'my_vm.1' }))).toEqual([
      '--api-sock',
      '/var/lib/banger/vms/vm1/firecracker.sock',
      '--id',
      'my-vm-1',
      '--log-path',
      '/var/lib/banger/vms/vm1/firecracker.log',
      '--level',
      'Info',
    ]);
    expect(firecrackerInstanceId('x'.repeat(80))).toHaveLength(64);
  });

  it('boot args keep the caller values', () => {
    expect(firecrackerBootArgs(spec({ cmdline: 'console=ttyS1 panic=0' }))).toBe(
      'console=ttyS1 panic=0 reboot=k pci=off',
    );
  });

  it.each<[string, Partial<VmLaunchSpec>, RegExp]>([
    ['TCG', { accel: 'tcg' }, /KVM/],
    ['user networking', { net: { mode: 'user', sshHostPort: 2222 } }, /tap/],
    ['qcow2', { disks: [{ path: '/d/o.qcow2', format: 'qcow2' }] }, /raw/],
    ['-incoming', { incoming: 'exec:cat /s' }, /snapshot/],
    ['too many vCPUs', { vcpus: 48 }, /32/],
  ])('rejects %s as unsupported', (_n, over, re) => {
    expect(() => prepareFirecrackerPlan(spec(over))).toThrow(re);
    try {
      prepareFirecrackerPlan(spec(over));
    } catch (e) {
      expect((e as EngineError).code).toBe('unsupported');
    }
  });

  it('plan hash covers the API calls', () => {
    const a = prepareFirecrackerPlan(spec());
    expect(a.driver).toBe('firecracker');
    expect(a.files.apiSocket).toBe('/var/lib/banger/vms/vm1/firecracker.sock');
    expect(prepareFirecrackerPlan(spec()).argvHash).toBe(a.argvHash);
    expect(prepareFirecrackerPlan(spec({ memoryMiB: 2048 })).argvHash).not.toBe(a.argvHash);
  });
});

interface Seen {
  method: string;
  url: string;
  body: unknown;
  contentType: string | undefined;
}

/** A fake Firecracker API on a unix socket. */
function fakeApi(
  path: string,
  respond?: (s: Seen) => [number, unknown] | undefined,
): Promise<{ server: Server; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString()));
    req.on('end', () => {
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        body: data ? JSON.parse(data) : undefined,
        contentType: req.headers['content-type'],
      };
      seen.push(s);
      const [status, body] =
        respond?.(s) ??
        (s.method === 'GET'
          ? [200, { id: 'vm1', state: 'Not started', vmm_version: '1.9.0', app_name: 'Firecracker' }]
          : [204, undefined]);
      res.writeHead(status, body === undefined ? {} : { 'Content-Type': 'application/json' });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    });
  });
  return new Promise((r) => server.listen(path, () => r({ server, seen })));
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-fc-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('Firecracker HTTP over the unix socket', () => {
  it('configureAndBoot sends each call as JSON, then InstanceStart', async () => {
    const sock = join(dir, 'fc.sock');
    const { server, seen } = await fakeApi(sock);
    const reqs = buildFirecrackerRequests(spec());
    await configureAndBoot(sock, reqs);
    server.close();
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      ...reqs.map((r) => `${r.method} ${r.path}`),
      'PUT /actions',
    ]);
    expect(seen.at(-1)!.body).toEqual({ action_type: 'InstanceStart' });
    expect(seen[0]!.contentType).toBe('application/json');
    expect(seen[0]!.body).toEqual({ vcpu_count: 2, mem_size_mib: 1024 });
  });

  it('a 400 with fault_message becomes EngineError(api_error) and stops the sequence', async () => {
    const sock = join(dir, 'fc.sock');
    const { server, seen } = await fakeApi(sock, (s) =>
      s.url === '/boot-source' ? [400, { fault_message: 'Kernel file cannot be opened' }] : undefined,
    );
    const err = await configureAndBoot(sock, buildFirecrackerRequests(spec())).catch((e: unknown) => e);
    server.close();
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('api_error');
    expect((err as EngineError).message).toContain('Kernel file cannot be opened');
    expect((err as EngineError).details).toMatchObject({ status: 400, path: '/boot-source' });
    expect(seen.map((s) => s.url)).toEqual(['/machine-config', '/boot-source']);
  });

  it('GET / returns the instance info; SendCtrlAltDel is an action', async () => {
    const sock = join(dir, 'fc.sock');
    const { server, seen } = await fakeApi(sock);
    const res = await firecrackerCall(sock, { method: 'GET', path: '/' });
    expect(res).toMatchObject({ status: 200, body: { state: 'Not started' } });
    await firecrackerCall(sock, fcSendCtrlAltDel);
    server.close();
    expect(seen[1]).toMatchObject({
      method: 'PUT',
      url: '/actions',
      body: { action_type: 'SendCtrlAltDel' },
    });
  });

  it('no server: the connect error surfaces', async () => {
    await expect(firecrackerCall(join(dir, 'none.sock'), { method: 'GET', path: '/' })).rejects.toMatchObject(
      {
        code: 'ENOENT',
      },
    );
  });
});

/**
 * A stand-in `firecracker` executable (a Node script): serves the API on --api-sock, logs the
 * calls, exits on SendCtrlAltDel unless FAKE_FC_IGNORE_CAD is set.
 */
const FAKE_FC = `#!${process.execPath}
const http = require('node:http');
const fs = require('node:fs');
const args = process.argv.slice(2);
const sock = args[args.indexOf('--api-sock') + 1];
const id = args[args.indexOf('--id') + 1];
const log = sock + '.calls';
let state = 'Not started';
// Look like the real thing in /proc (Node would otherwise show up as "MainThread").
process.title = 'firecracker';
if (args.includes('--die')) { console.error('fake firecracker: bad things'); process.exit(3); }
http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    fs.appendFileSync(log, req.method + ' ' + req.url + ' ' + body + '\\n');
    if (req.method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ id, state, vmm_version: 'fake', app_name: 'Firecracker' }));
    }
    const b = body ? JSON.parse(body) : {};
    if (req.url === '/actions' && b.action_type === 'InstanceStart') { state = 'Running'; console.log('guest console says hi'); }
    if (req.url === '/actions' && b.action_type === 'SendCtrlAltDel' && !process.env.FAKE_FC_IGNORE_CAD) setTimeout(() => process.exit(0), 100);
    if (req.method === 'PATCH' && req.url === '/vm') {
      if (state === 'Not started') { res.writeHead(400, { 'Content-Type': 'application/json' }); return res.end(JSON.stringify({ fault_message: 'not started' })); }
      state = b.state === 'Paused' ? 'Paused' : 'Running';
    }
    res.writeHead(204); res.end();
  });
}).listen(sock);
`;

describe('FirecrackerDriver lifecycle against a fake firecracker binary', () => {
  function setup(extraArgv: string[] = []): { driver: FirecrackerDriver; s: VmLaunchSpec; bin: string } {
    const bin = join(dir, 'firecracker');
    writeFileSync(bin, FAKE_FC);
    chmodSync(bin, 0o755);
    const vmDir = join(dir, 'vm1');
    const s = spec({ vmDir, serialLog: join(vmDir, 'serial.log'), agentSocket: join(vmDir, 'agent.sock') });
    const driver = new FirecrackerDriver({ binary: bin });
    const orig = driver.prepare.bind(driver);
    driver.prepare = (x) => {
      const p = orig(x);
      return { ...p, argv: [...p.argv, ...extraArgv] };
    };
    return { driver, s, bin };
  }

  it('start configures and boots; reattach finds it; graceful shutdown is clean', async () => {
    const { driver, s } = setup();
    const h = await driver.start(driver.prepare(s));
    try {
      const calls = readFileSync(join(s.vmDir, 'firecracker.sock.calls'), 'utf8').trim().split('\n');
      expect(calls.map((c) => c.split(' ').slice(0, 2).join(' '))).toEqual([
        'GET /',
        'PUT /machine-config',
        'PUT /boot-source',
        'PUT /drives/disk0',
        'PUT /drives/disk1',
        'PUT /network-interfaces/net0',
        'PUT /vsock',
        'PUT /actions',
      ]);
      expect(await h.status()).toBe('running');
      // Serial console = the VMM's stdout.
      await new Promise((r) => setTimeout(r, 50));
      expect(readFileSync(s.serialLog, 'utf8')).toContain('guest console says hi');

      await h.release();
      const again = await new FirecrackerDriver().reattach(s.vmDir);
      expect(again?.pid).toBe(h.pid);
      await expect(driver.start(driver.prepare(s))).rejects.toMatchObject({ code: 'already_running' });
      expect(await again!.shutdownGraceful(5_000)).toBe('clean');
      expect(await again!.status()).toBe('gone');
      expect(await new FirecrackerDriver().reattach(s.vmDir)).toBeNull();
    } finally {
      await h.kill();
    }
  });

  it('graceful timeout, then kill', async () => {
    process.env.FAKE_FC_IGNORE_CAD = '1';
    try {
      const { driver, s } = setup();
      const h = await driver.start(driver.prepare(s));
      expect(await h.shutdownGraceful(300)).toBe('timeout');
      expect(await h.status()).toBe('running');
      const exit = h.waitExit();
      await h.kill();
      expect(await exit).toEqual({ code: null, signal: 'SIGKILL' });
      expect(await h.status()).toBe('gone');
    } finally {
      delete process.env.FAKE_FC_IGNORE_CAD;
    }
  });

  it('statusDetail and resume through PATCH /vm; onEvent delivers the exit', async () => {
    process.env.FAKE_FC_IGNORE_CAD = '1';
    try {
      const { driver, s } = setup();
      const h = await driver.start(driver.prepare(s));
      expect(await h.statusDetail()).toEqual({ status: 'running' });
      await h.call(fcPause);
      expect(await h.statusDetail()).toEqual({ status: 'paused', reason: 'paused' });
      await h.resume();
      expect(await h.statusDetail()).toEqual({ status: 'running' });
      const calls = readFileSync(join(s.vmDir, 'firecracker.sock.calls'), 'utf8').trim().split('\n');
      expect(calls.filter((c) => c.startsWith('PATCH'))).toEqual([
        'PATCH /vm {"state":"Paused"}',
        'PATCH /vm {"state":"Resumed"}',
      ]);

      const events: VmmEvent[] = [];
      h.onEvent((e) => events.push(e));
      process.kill(h.pid, 'SIGKILL');
      for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(events).toEqual([
        {
          kind: 'exit',
          at: expect.any(String) as string,
          info: { code: null, signal: 'SIGKILL', reason: 'killed by signal SIGKILL' },
        },
      ]);
      expect(await h.statusDetail()).toEqual({ status: 'gone', reason: 'killed by signal SIGKILL' });
      await expect(h.resume()).rejects.toMatchObject({ code: 'not_running' });
    } finally {
      delete process.env.FAKE_FC_IGNORE_CAD;
    }
  });

  it('early exit: start_failed with the VMM stderr', async () => {
    const { driver, s } = setup(['--die']);
    const err = await driver.start(driver.prepare(s)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('start_failed');
    expect((err as EngineError).message).toContain('fake firecracker: bad things');
    expect(await driver.reattach(s.vmDir)).toBeNull();
  });
});

describe('detectFirecracker', () => {
  it('not on PATH', async () => {
    expect(await detectFirecracker({ pathEnv: dir })).toMatchObject({
      available: false,
      reason: expect.stringMatching(/not found/),
    });
  });

  it('found, but no usable /dev/kvm', async () => {
    const bin = join(dir, 'firecracker');
    writeFileSync(bin, '#!/bin/sh\necho Firecracker v1.9.0\n');
    chmodSync(bin, 0o755);
    expect(await detectFirecracker({ pathEnv: dir, devKvm: join(dir, 'kvm') })).toMatchObject({
      available: false,
      path: bin,
    });
  });

  it('found with a device: runs --version', async () => {
    const bin = join(dir, 'firecracker');
    writeFileSync(bin, '#!/bin/sh\necho Firecracker v1.9.0\n');
    chmodSync(bin, 0o755);
    const kvm = join(dir, 'kvm');
    writeFileSync(kvm, '');
    expect(await detectFirecracker({ binary: bin, devKvm: kvm })).toEqual({
      available: true,
      reason: 'firecracker binary and /dev/kvm present',
      path: bin,
      version: 'Firecracker v1.9.0',
    });
  });
});
