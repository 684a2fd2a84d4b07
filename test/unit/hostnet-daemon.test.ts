// The daemon's bridge mode against the recording fake, through a real in-process bangerd-root on
// a temp socket: the create pipeline's revert paths ("tap creation fails → nothing left behind"),
// mode choice, address allocation and start-up reconciliation.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, type DaemonConfig } from '../../src/daemon/config.ts';
import { HelperError, HelperLink } from '../../src/daemon/helper-link.ts';
import { bridgeIpArg, VmNetwork } from '../../src/vm/network.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { QemuDriver } from '../../src/engine/index.ts';
import { startHelper } from '../../src/helper/start.ts';
import { RecordingHostnet } from '../../src/hostnet/index.ts';
import { createLogger } from '../../src/log/logger.ts';
import { opContext } from '../../src/rpc/context.ts';
import { toErrorResponse } from '../../src/rpc/errors.ts';
import { newId, openStore, type Store } from '../../src/store/index.ts';
import { runCreate, type CreateDeps } from '../../src/vm/create.ts';
import type { EgressEvents } from '../../src/egress/events.ts';
import { macFor } from '../../src/vm/layout.ts';
import { guestCmdline, launchSpec } from '../../src/vm/machine.ts';
import { VmRuntime } from '../../src/vm/runtime.ts';
import { sshPaths } from '../../src/vm/ssh.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const config: DaemonConfig = { ...DEFAULT_CONFIG, network: 'auto' };

describe('daemon bridge mode with the recording fake', () => {
  const tmp = shortTempDir('bgn');
  const helperLog = new MemoryLog();
  const log = createLogger({ name: 'bangerd', stream: new MemoryLog() });
  const sock = join(tmp.dir, 'root', 'h.sock');
  let server: Server;
  let fake: RecordingHostnet;
  let store: Store;
  let net: VmNetwork;
  let imageName: string;

  beforeAll(async () => {
    execFileSync(process.execPath, [
      fileURLToPath(new URL('../../scripts/build-addon.mjs', import.meta.url)),
    ]);
    chmodSync(tmp.dir, 0o755);
  });
  afterAll(() => tmp.cleanup());

  beforeEach(async () => {
    fake = new RecordingHostnet();
    ({ server } = await startHelper({
      socket: sock,
      ownerUid: process.getuid!(),
      log: createLogger({ name: 'bangerd-root', stream: helperLog }),
      hostnet: { links: fake, nat: fake, resolver: fake },
    }));
    store = openStore(join(tmp.dir, `state-${newId()}.db`));
    const k = store.kernels.insert({
      name: `k-${newId()}`,
      version: '6.1',
      kernelPath: '/nope/vmlinuz',
      source: 'imported',
    });
    imageName = `img-${newId()}`;
    store.images.insert({
      name: imageName,
      kernelId: k.id,
      rootfsPath: '/nope/rootfs.ext4',
      sizeBytes: 1,
      source: 'imported',
    });
    net = new VmNetwork({ config, store, log, helper: new HelperLink(sock) });
  });
  afterEach(() => {
    server.close();
    store.close();
  });

  let forgotten: string[] = [];
  beforeEach(() => {
    forgotten = [];
  });

  function deps(): CreateDeps {
    const stateDir = join(tmp.dir, 'state');
    return {
      stateDir,
      runtime: new VmRuntime(new QemuDriver({}), log, () => undefined),
      log,
      ssh: sshPaths(stateDir),
      accel: async () => 'tcg',
      readyTimeoutMs: 1000,
      network: net,
      store,
      installPubKey: async () => 'ssh-ed25519 AAAA test',
      setState: (vm, to, reason) => store.vms.writeState(vm.id, { state: to, reason: reason ?? null }),
      egress: {
        events: { forget: (vm: string) => void forgotten.push(vm) } as unknown as EgressEvents,
        attach: () => undefined,
        update: () => undefined,
        detach: () => undefined,
      },
      resolveImage: async (name) => {
        const image = store.images.getByName(name ?? imageName)!;
        return { image, kernel: store.kernels.getById(image.kernelId)! };
      },
    };
  }

  async function create(name: string, nat: boolean): Promise<{ err: unknown; steps: string[] }> {
    const ops = new OperationRegistry(log);
    const id = newId();
    const t = ops.begin(`op-${newId()}`, 'vm.create', 'vm.create.begin', { vm: name });
    const draft = {
      id,
      name,
      vcpus: 1,
      memoryMib: 256,
      diskSizeBytes: 1 << 30,
      networkMode: 'bridge',
      mac: macFor(id),
      nat,
    };
    const err = await runCreate(deps(), t, { draft, imageName, start: false }).catch((e: unknown) => e);
    await t.rollback();
    return { err, steps: t.op.steps.map((s) => `${s.name}:${s.state}`) };
  }

  it('tap creation fails → the create is undone and nothing is left behind', async () => {
    fake.failOn('create_tap', 'RTNETLINK answers: Device or resource busy');
    const { err, steps } = await create('tapfail', true);
    // The helper's error reaches the daemon as a HelperError, operation_failed on the wire.
    expect(err).toBeInstanceOf(HelperError);
    const wire = toErrorResponse(err, 'op-0000000000ab');
    expect(wire.code).toBe('operation_failed');
    expect(wire.bareMessage).toMatch(
      /^root helper: priv\.create_tap: create_tap: RTNETLINK answers: Device or resource busy/,
    );
    expect(steps).toEqual(['resolve_image:done', 'record:undone', 'network:failed']);
    expect(store.vms.list()).toEqual([]);
    expect(fake.taps.size).toBe(0);
    expect(fake.natRules.size).toBe(0);
    const tap = 'bgt';
    expect(fake.print().split('\n')).toEqual([
      'ensure_bridge br-banger 10.213.0.1/24',
      'ensure_dns_redirect br-banger 10.213.0.1:53 -> :5354',
      expect.stringMatching(
        new RegExp(
          `^create_tap ${tap}[0-9a-f]{12} master=br-banger owner=${process.getuid!()} -> FAILED: RTNETLINK answers: Device or resource busy$`,
        ),
      ),
    ]);
  });

  it('NAT fails after the tap was made → attach removes its own tap', async () => {
    fake.failOn('ensure_nat');
    const { err, steps } = await create('natfail', true);
    expect((err as Error).message).toMatch(/ensure_nat: injected failure/);
    expect(steps).toEqual(['resolve_image:done', 'record:undone', 'network:failed']);
    expect(fake.taps.size).toBe(0);
    expect(fake.natRules.size).toBe(0);
    expect(fake.transcript.map((l) => l.split(' ')[0])).toEqual([
      'ensure_bridge',
      'ensure_dns_redirect',
      'create_tap',
      'ensure_nat',
      'delete_tap',
    ]);
  });

  it('a later step fails → the network step is undone (NAT removed, tap deleted)', async () => {
    // The image's rootfs does not exist, so prepare_disk fails after network succeeded.
    const { err, steps } = await create('diskfail', true);
    expect(err).toBeDefined();
    // The record's undo drops the egress events' cached op id of the name (a later create of the
    // same name must not log under this failed one's op id).
    expect(forgotten).toEqual(['diskfail']);
    expect(steps).toEqual(['resolve_image:done', 'record:undone', 'network:undone', 'prepare_disk:failed']);
    expect(store.vms.list()).toEqual([]);
    expect(fake.taps.size).toBe(0);
    expect(fake.natRules.size).toBe(0);
    const ops = fake.transcript.map((l) => l.split(' ')[0]);
    expect(ops).toEqual([
      'ensure_bridge',
      'ensure_dns_redirect',
      'create_tap',
      'ensure_nat',
      'remove_nat',
      'delete_tap',
    ]);
    const vmsDir = join(tmp.dir, 'state', 'vms');
    expect(existsSync(vmsDir) ? readdirSync(vmsDir) : []).toEqual([]);
  });

  it('the helper log names the failing verb with the daemon’s op id', async () => {
    fake.failOn('create_tap');
    const ops = new OperationRegistry(log);
    const opId = `op-${newId()}`;
    await opContext.run({ opId, method: 'vm.create.begin', startedAt: Date.now() }, async () => {
      const t = ops.begin(opId, 'vm.create', 'vm.create.begin', { vm: 'opid' });
      const id = newId();
      const draft = {
        id,
        name: 'opid',
        vcpus: 1,
        memoryMib: 256,
        diskSizeBytes: 1 << 30,
        networkMode: 'bridge',
        mac: macFor(id),
        nat: false,
      };
      await runCreate(deps(), t, { draft, imageName, start: false }).catch(() => undefined);
      await t.rollback();
    });
    const failed = helperLog.records().filter((r) => r.msg === 'helper rpc failed' && r.op_id === opId);
    expect(failed.map((r) => r.method)).toEqual(['priv.create_tap']);
    expect(failed[0]!.code).toBe('operation_failed');
  });

  it('start-up reconciliation removes taps and NAT no VM owns, and restores NAT a VM lost', async () => {
    const keep = store.vms.insert({
      name: 'keep',
      imageId: store.images.getByName(imageName)!.id,
      state: 'stopped',
      vcpus: 1,
      memoryMib: 256,
      diskSizeBytes: 1,
      networkMode: 'bridge',
      guestIp: '10.213.0.2',
      mac: '52:54:00:00:00:01',
      nat: true,
    });
    const noNat = store.vms.insert({
      name: 'nonat',
      imageId: store.images.getByName(imageName)!.id,
      state: 'stopped',
      vcpus: 1,
      memoryMib: 256,
      diskSizeBytes: 1,
      networkMode: 'bridge',
      guestIp: '10.213.0.3',
      mac: '52:54:00:00:00:02',
      nat: false,
    });
    await fake.ensureBridge('br-banger', '10.213.0.1/24');
    await fake.createTap(`bgt${keep.id}`, 'br-banger', 1);
    await fake.createTap(`bgt${noNat.id}`, 'br-banger', 1);
    await fake.createTap('bgt0000deadbeef', 'br-banger', 1);
    await fake.ensure(noNat.id, '10.213.0.3', 'br-banger');
    await fake.ensure('0000deadbeef', '10.213.0.9', 'br-banger');
    const r = await net.reconcile();
    expect(r.removedTaps).toEqual(['bgt0000deadbeef']);
    expect(r.removedNat.sort()).toEqual(['0000deadbeef', noNat.id].sort());
    expect(r.restoredNat).toEqual([keep.id]);
    expect([...fake.taps.keys()].sort()).toEqual([`bgt${keep.id}`, `bgt${noNat.id}`].sort());
    expect([...fake.natRules.keys()]).toEqual([keep.id]);
    // A second pass finds nothing to do.
    expect(await net.reconcile()).toEqual({ removedTaps: [], removedNat: [], restoredNat: [] });
  });

  it('mode choice: bridge by default when the helper answers; user when rootless; explicit bridge needs a helper', async () => {
    expect(await net.chooseMode(undefined, false)).toBe('bridge');
    expect(await net.chooseMode('user', false)).toBe('user');
    await expect(net.chooseMode('user', true)).rejects.toThrow(/--nat applies to bridge networking/);
    const rootless = new VmNetwork({ config, store, log, helper: new HelperLink(undefined) });
    expect(await rootless.chooseMode(undefined, false)).toBe('user');
    await expect(rootless.chooseMode('bridge', false)).rejects.toMatchObject({ code: 'invalid' });
    const userCfg = new VmNetwork({
      config: { ...config, network: 'user' },
      store,
      log,
      helper: new HelperLink(sock),
    });
    expect(await userCfg.chooseMode(undefined, false)).toBe('user');
    expect(await userCfg.chooseMode('bridge', false)).toBe('bridge');
    const gone = new VmNetwork({ config, store, log, helper: new HelperLink(join(tmp.dir, 'nope.sock')) });
    expect(await gone.chooseMode(undefined, false)).toBe('user');
    await expect(gone.chooseMode('bridge', false)).rejects.toMatchObject({ code: 'failed' });
  });

  it('guest addresses are allocated lowest-free from the subnet, skipping the gateway', () => {
    const img = store.images.getByName(imageName)!.id;
    const ips: string[] = [];
    for (const name of ['a', 'b', 'c']) {
      const ip = store.transaction(() => net.allocateGuestIp());
      store.vms.insert({
        name,
        imageId: img,
        vcpus: 1,
        memoryMib: 256,
        diskSizeBytes: 1,
        networkMode: 'bridge',
        guestIp: ip,
        mac: '52:54:00:00:00:01',
      });
      ips.push(ip);
    }
    expect(ips).toEqual(['10.213.0.2', '10.213.0.3', '10.213.0.4']);
    store.vms.delete(store.vms.getByName('b')!.id);
    expect(net.allocateGuestIp()).toBe('10.213.0.3');
  });

  it('a bridged guest boots with a static ip= and a tap netdev; its tap name derives from its id', () => {
    const vm = {
      ...store.vms.insert({
        name: 'boot',
        imageId: store.images.getByName(imageName)!.id,
        vcpus: 1,
        memoryMib: 256,
        diskSizeBytes: 1,
        networkMode: 'bridge',
        guestIp: '10.213.0.7',
        mac: '52:54:00:00:00:07',
      }),
    };
    const g = net.guest(vm);
    expect(g).toEqual({
      tap: `bgt${vm.id}`,
      ip: '10.213.0.7',
      prefix: 24,
      netmask: '255.255.255.0',
      gateway: '10.213.0.1',
      nameservers: ['10.213.0.1'],
    });
    expect(bridgeIpArg('boot', g)).toBe('ip=10.213.0.7::10.213.0.1:255.255.255.0:boot:eth0:off:10.213.0.1');
    expect(guestCmdline(vm, g)).toContain(
      ' ip=10.213.0.7::10.213.0.1:255.255.255.0:boot:eth0:off:10.213.0.1',
    );
    const k = store.kernels.getById(store.images.getByName(imageName)!.kernelId)!;
    const spec = launchSpec(vm, k, join(tmp.dir, 'state'), 'tcg', 2222, g);
    expect(spec.net).toEqual({ mode: 'tap', tap: `bgt${vm.id}`, mac: '52:54:00:00:00:07' });
  });
});
