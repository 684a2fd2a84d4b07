// The daemon's idle tracker on a fake clock and a real (temporary) store: what it pauses, when,
// what keeps a VM awake, and that its timer survives a daemon restart (a new tracker).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IdleTracker, PERSIST_EVERY_MS, type IdleTrackerDeps } from '../../src/daemon/idle.ts';
import type { TcpConn } from '../../src/daemon/idle-ssh.ts';
import { openStore } from '../../src/store/db.ts';
import type { Store } from '../../src/store/store.ts';
import type { VmRow } from '../../src/store/vms.ts';
import { parseConfig } from '../../src/daemon/config.ts';

let dir: string;
let store: Store;
let now: number;
const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const MIN = 60_000;
const quiet = {
  info: () => undefined,
  warn: () => undefined,
  debug: () => undefined,
  error: () => undefined,
} as unknown as IdleTrackerDeps['log'];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-idle-'));
  now = T0;
  store = openStore(join(dir, 'banger.db'), { now: () => new Date(now) });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function addVm(name: string, extra: { idlePauseAfterMs?: number | null; port?: number } = {}): VmRow {
  const k =
    store.kernels.getByName('k') ??
    store.kernels.insert({ name: 'k', version: '6.1', kernelPath: '/k', source: 'built' });
  const img =
    store.images.getByName('i') ??
    store.images.insert({ name: 'i', kernelId: k.id, rootfsPath: '/i', sizeBytes: 1, source: 'built' });
  const row = store.vms.insert({
    name,
    imageId: img.id,
    vcpus: 1,
    memoryMib: 512,
    diskSizeBytes: 2 ** 30,
    networkMode: 'user',
    mac: '02:00:00:00:00:01',
    state: 'running',
    ...(extra.idlePauseAfterMs !== undefined ? { idlePauseAfterMs: extra.idlePauseAfterMs } : {}),
  });
  ports.set(row.id, extra.port ?? 40000 + ports.size);
  return row;
}

const ports = new Map<string, number>();

interface World {
  tracker: IdleTracker;
  paused: string[];
  busy: Map<string, string>;
  table: TcpConn[];
  failPause: boolean;
}

function world(defaultMs: number): World {
  const w: World = {
    paused: [],
    busy: new Map(),
    table: [],
    failPause: false,
    tracker: undefined as unknown as IdleTracker,
  };
  w.tracker = new IdleTracker({
    vms: store.vms,
    defaultMs,
    busyWith: (id) => w.busy.get(id),
    isRunning: (id) => store.vms.getById(id)?.state === 'running',
    sshEndpoint: (vm) => ({ mode: 'user', port: ports.get(vm.id)! }),
    pause: async (vm) => {
      if (w.failPause) throw new Error('disk full');
      w.paused.push(vm.name);
      // What the vm.pause path leaves: paused with a saved state.
      store.vms.update(vm.id, { savedState: { bytes: 1, savedAt: new Date(now).toISOString(), saveMs: 1 } });
      store.vms.writeState(vm.id, { state: 'paused', reason: 'saved' });
    },
    log: quiet,
    now: () => now,
    tcpTable: async () => w.table,
  });
  return w;
}

/** Deps that pause nothing and see no session (tests that count what a tick reads). */
function baseDeps(): Omit<IdleTrackerDeps, 'vms' | 'defaultMs'> {
  return {
    busyWith: () => undefined,
    isRunning: () => true,
    sshEndpoint: () => undefined,
    pause: async () => undefined,
    log: quiet,
    now: () => now,
    tcpTable: async () => [],
  };
}

const session = (port: number): TcpConn => ({
  localIp: '127.0.0.1',
  localPort: port,
  remoteIp: '127.0.0.1',
  remotePort: 50000,
  established: true,
});

async function tickAt(w: World, t: number): Promise<void> {
  now = t;
  await w.tracker.tick();
  await w.tracker.settle();
}

describe('IdleTracker', () => {
  it('pauses a running VM once it was unused for idle_pause_after, not before, and marks it idle-paused', async () => {
    const vm = addVm('a');
    const w = world(30 * MIN);
    await tickAt(w, T0 + 30 * MIN - 1);
    expect(w.paused).toEqual([]);
    await tickAt(w, T0 + 30 * MIN);
    expect(w.paused).toEqual(['a']);
    const row = store.vms.getById(vm.id)!;
    expect(row.idlePausedAt).toBe(new Date(T0 + 30 * MIN).toISOString());
    expect(IdleTracker.idlePaused(row)).toBe(true);
    // Paused now: never paused twice.
    await tickAt(w, T0 + 90 * MIN);
    expect(w.paused).toEqual(['a']);
  });

  it('is off by default (0) and per VM; a VM setting overrides the default either way', async () => {
    addVm('default-off');
    addVm('own-on', { idlePauseAfterMs: MIN });
    const w = world(0);
    await tickAt(w, T0 + 100 * MIN);
    expect(w.paused).toEqual(['own-on']);

    addVm('own-off', { idlePauseAfterMs: 0 });
    const w2 = world(MIN);
    await tickAt(w2, T0 + 200 * MIN);
    expect(w2.paused).toEqual(['default-off']);
  });

  it('an SSH session seen in the TCP table keeps the VM running; the window starts when it closes', async () => {
    const vm = addVm('s', { port: 41022 });
    const w = world(10 * MIN);
    w.table = [session(41022)];
    for (let m = 1; m <= 60; m++) await tickAt(w, T0 + m * MIN);
    expect(w.paused).toEqual([]);
    w.table = [];
    await tickAt(w, T0 + 69 * MIN);
    expect(w.paused).toEqual([]);
    await tickAt(w, T0 + 70 * MIN);
    expect(w.paused).toEqual(['s']);
    // Another VM's port does not count.
    expect(store.vms.getById(vm.id)!.state).toBe('paused');
  });

  it('a session on another port does not keep it awake', async () => {
    addVm('o', { port: 41022 });
    const w = world(MIN);
    w.table = [session(41023)];
    await tickAt(w, T0 + MIN);
    expect(w.paused).toEqual(['o']);
  });

  it('never pauses a busy VM (creating, forking, a workspace export): busy counts as use', async () => {
    const vm = addVm('b');
    const w = world(MIN);
    w.busy.set(vm.id, 'exporting its workspace');
    await tickAt(w, T0 + 10 * MIN);
    expect(w.paused).toEqual([]);
    w.busy.delete(vm.id);
    await tickAt(w, T0 + 10 * MIN + MIN - 1);
    expect(w.paused).toEqual([]);
    await tickAt(w, T0 + 11 * MIN);
    expect(w.paused).toEqual(['b']);
  });

  it('touch (vm.touch, vm.ssh, …) restarts the window and is written through at once', async () => {
    const vm = addVm('t');
    const w = world(10 * MIN);
    now = T0 + 9 * MIN;
    w.tracker.touch(vm.id);
    expect(store.vms.getById(vm.id)!.lastUsedAt).toBe(new Date(T0 + 9 * MIN).toISOString());
    await tickAt(w, T0 + 18 * MIN);
    expect(w.paused).toEqual([]);
    await tickAt(w, T0 + 19 * MIN);
    expect(w.paused).toEqual(['t']);
  });

  it('the timer survives a daemon restart: a new tracker reads the last use from the database', async () => {
    const vm = addVm('r');
    const w = world(10 * MIN);
    now = T0 + 5 * MIN;
    w.tracker.touch(vm.id);
    // The daemon restarts 3 minutes later: the VM has 2 minutes left, not 10 again.
    const w2 = world(10 * MIN);
    await tickAt(w2, T0 + 14 * MIN);
    expect(w2.paused).toEqual([]);
    await tickAt(w2, T0 + 15 * MIN);
    expect(w2.paused).toEqual(['r']);
  });

  it('use seen on ticks is written in steps, so a restart loses at most PERSIST_EVERY_MS of it', async () => {
    const vm = addVm('p', { port: 41022 });
    const w = world(10 * MIN);
    w.table = [session(41022)];
    await tickAt(w, T0 + 1000);
    const first = store.vms.getById(vm.id)!.lastUsedAt;
    expect(first).toBe(new Date(T0 + 1000).toISOString());
    await tickAt(w, T0 + 6000);
    expect(store.vms.getById(vm.id)!.lastUsedAt).toBe(first);
    await tickAt(w, T0 + 1000 + PERSIST_EVERY_MS);
    expect(store.vms.getById(vm.id)!.lastUsedAt).toBe(new Date(T0 + 1000 + PERSIST_EVERY_MS).toISOString());
  });

  it('a pause that fails clears the mark and waits another whole window', async () => {
    const vm = addVm('f');
    const w = world(MIN);
    w.failPause = true;
    await tickAt(w, T0 + MIN);
    expect(store.vms.getById(vm.id)!.idlePausedAt).toBeNull();
    w.failPause = false;
    await tickAt(w, T0 + 2 * MIN - 1);
    expect(w.paused).toEqual([]);
    await tickAt(w, T0 + 2 * MIN);
    expect(w.paused).toEqual(['f']);
  });

  it('leaves a VM paused by request alone and clears a stale mark on a running VM', async () => {
    const byUser = addVm('u');
    store.vms.writeState(byUser.id, { state: 'paused', reason: 'by request' });
    const resumed = addVm('x');
    store.vms.setIdlePaused(resumed.id, new Date(T0));
    const w = world(MIN);
    now = T0 + 30_000;
    w.tracker.touch(resumed.id);
    await tickAt(w, T0 + 40_000);
    expect(w.paused).toEqual([]);
    expect(store.vms.getById(resumed.id)!.idlePausedAt).toBeNull();
    expect(IdleTracker.idlePaused(store.vms.getById(byUser.id)!)).toBe(false);
  });

  it('off everywhere: a tick reads ids, settings and marks only, no whole rows; a setting or a mark makes it look', async () => {
    const a = addVm('cheap');
    addVm('cheap-never', { idlePauseAfterMs: 0 });
    let lists = 0;
    const vms: IdleTrackerDeps['vms'] = {
      list: () => {
        lists++;
        return store.vms.list();
      },
      listIdleFacts: () => store.vms.listIdleFacts(),
      getById: (id) => store.vms.getById(id),
      touch: (id, at) => store.vms.touch(id, at),
      setIdlePaused: (id, at) => store.vms.setIdlePaused(id, at),
    };
    const t = new IdleTracker({ ...baseDeps(), vms, defaultMs: 0 });
    expect((await t.tick()).size).toBe(0);
    expect(lists).toBe(0);
    // A stale mark (a stopped VM's) must still be cleared: the tick looks.
    store.vms.setIdlePaused(a.id, new Date(T0));
    await t.tick();
    expect(lists).toBe(1);
    expect(store.vms.getById(a.id)!.idlePausedAt).toBeNull();
    await t.tick();
    expect(lists).toBe(1);
    // One VM with its own setting: every tick looks at every VM.
    store.vms.update(a.id, { idlePauseAfterMs: MIN });
    expect((await t.tick()).get('cheap')).toBeDefined();
    expect(lists).toBe(2);
    // With a default on, the cheap look is skipped: the whole rows are read at once.
    const on = new IdleTracker({ ...baseDeps(), vms, defaultMs: MIN });
    expect([...(await on.tick()).keys()].sort()).toEqual(['cheap', 'cheap-never']);
    expect(lists).toBe(3);
  });

  it('forgets deleted VMs: a VM re-created with the same id starts from its own record', async () => {
    const vm = addVm('gone', { idlePauseAfterMs: MIN });
    const w = world(0);
    now = T0 + 10 * MIN;
    w.tracker.touch(vm.id);
    expect(w.tracker.lastUsed(store.vms.getById(vm.id)!)).toBe(T0 + 10 * MIN);
    store.vms.delete(vm.id);
    await tickAt(w, T0 + 10 * MIN + 1000);
    now = T0;
    const again = store.vms.insert({
      id: vm.id,
      name: 'gone-again',
      imageId: vm.imageId,
      vcpus: 1,
      memoryMib: 512,
      diskSizeBytes: 2 ** 30,
      networkMode: 'user',
      mac: '02:00:00:00:00:02',
      state: 'running',
    });
    // Remembered, it would say T0 + 10 min (memory wins over an older record).
    expect(w.tracker.lastUsed(again)).toBe(T0);
  });

  it('reads no TCP table when no VM has idle pause on', async () => {
    addVm('n');
    let reads = 0;
    const t = new IdleTracker({
      ...baseDeps(),
      vms: store.vms,
      defaultMs: 0,
      tcpTable: async () => {
        reads++;
        return [];
      },
    });
    await t.tick();
    expect(reads).toBe(0);
  });
});

describe('[vm_defaults] idle_pause_after', () => {
  it('is read as ms; "0" and "" are off', () => {
    expect(parseConfig('[vm_defaults]\nidle_pause_after = "30m"\n').vm_defaults.idle_pause_after_ms).toBe(
      30 * MIN,
    );
    expect(parseConfig('[vm_defaults]\nidle_pause_after = "0"\n').vm_defaults.idle_pause_after_ms).toBe(0);
    expect(parseConfig('[vm_defaults]\nidle_pause_after = ""\n').vm_defaults.idle_pause_after_ms).toBe(0);
    expect(parseConfig('').vm_defaults.idle_pause_after_ms).toBeUndefined();
  });

  it('refuses what is not a duration, with the key and what it takes', () => {
    expect(() => parseConfig('[vm_defaults]\nidle_pause_after = "30"\n', 'c.toml')).toThrow(
      /^c\.toml: vm_defaults\.idle_pause_after: "30" is not a duration: give a number with a unit/,
    );
    expect(() => parseConfig('[vm_defaults]\nidle_pause_after = 30\n', 'c.toml')).toThrow(
      /vm_defaults\.idle_pause_after must be a duration in quotes/,
    );
    expect(() => parseConfig('[vm_defaults]\nidle_pause_after = "1s"\n')).toThrow(/from 10s to 30d/);
  });
});
