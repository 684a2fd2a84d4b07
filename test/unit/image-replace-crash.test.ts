// A daemon killed at each step of a forced rebuild over an existing image (and of a forced kernel
// replacement): the crash point copies STATE as a kill -9 would leave it (the store's files with
// the transaction open, the directories as they are), that copy becomes STATE, a fresh service
// runs the start-up sweep, and the rows and files must agree: the old image whole when the COMMIT
// had not happened, the new one (and no trace of the old) when it had.
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Operation } from '../../generated/types.gen.ts';
import { finishReplace, recoverReplacements, replaceDir } from '../../src/daemon/services/dir-replace.ts';
import type { DerivedBuildOptions } from '../../src/daemon/services/image-derived.ts';
import { ImageServiceImpl } from '../../src/daemon/services/image.ts';
import { KernelPulls } from '../../src/daemon/services/kernel-pull.ts';
import type { CatalogEntry } from '../../src/image/kernel-catalog.ts';
import { taggedBuild } from '../helpers/tagged-build.ts';
import { createLogger } from '../../src/log/logger.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { type RpcContext, mintOpId } from '../../src/rpc/context.ts';
import { openStore, type Store } from '../../src/store/index.ts';
import { MemoryLog } from '../helpers/logs.ts';

/** Every step of a replacement, in order; the COMMIT falls between `commit` and `cleanup`. */
const POINTS = ['journal', 'set_aside', 'move_in', 'commit', 'cleanup', 'forget'] as const;
const COMMITTED = new Set<string>(['cleanup', 'forget']);

let dir: string;
let stateDir: string;
let store: Store;
let logs: MemoryLog;
let ops: OperationRegistry;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-replace-crash-'));
  stateDir = join(dir, 'state');
  mkdirSync(stateDir);
  store = openStore(join(stateDir, 'banger.db'));
  logs = new MemoryLog();
  ops = new OperationRegistry(createLogger({ name: 't', stream: logs }));
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function ctx(): RpcContext {
  const log = createLogger({ name: 'test', stream: logs });
  return {
    opId: mintOpId(),
    method: 'test',
    startedAt: Date.now(),
    signal: new AbortController().signal,
    log,
  };
}

/** The derived build's prepare VM stand-in: the overlay carries the tag. */
function taggedDerived(
  tag: string,
): (o: DerivedBuildOptions) => Promise<{ path: string; sizeBytes: number }> {
  return async (o) => {
    const path = join(o.staging, 'rootfs.qcow2');
    await writeFile(path, `qcow2 ${tag}`);
    return { path, sizeBytes: 1 };
  };
}

interface Crash {
  hook: (point: string) => void;
  /** Whether the point was reached (STATE was copied as the kill would leave it). */
  hit: () => boolean;
}

/**
 * At `at`: copy STATE (not the store's -shm, which a new process rebuilds) as a kill -9 there
 * leaves it, then throw so the live service stops too (its rollback is checked separately).
 */
function crashAt(at: string): Crash {
  let hit = false;
  const hook = (point: string): void => {
    if (point !== at) return;
    hit = true;
    cpSync(stateDir, join(dir, 'crashed'), { recursive: true, filter: (src) => !src.endsWith('-shm') });
    throw new Error(`simulated crash at ${point}`);
  };
  return { hook, hit: () => hit };
}

/** Replace STATE with what the crash left and reopen the store: the restarted daemon's view. */
function restart(): void {
  store.close();
  rmSync(stateDir, { recursive: true, force: true });
  renameSync(join(dir, 'crashed'), stateDir);
  store = openStore(join(stateDir, 'banger.db'));
}

function service(tag: string, crash?: Crash): ImageServiceImpl {
  return new ImageServiceImpl({
    store,
    ops,
    log: ops.log,
    stateDir,
    cacheDir: join(dir, 'cache'),
    build: taggedBuild(tag),
    buildDerived: taggedDerived(tag),
    ...(crash ? { crash: crash.hook } : {}),
  });
}

async function settled(svc: ImageServiceImpl, id: string): Promise<Operation> {
  const end = Date.now() + 5000;
  for (;;) {
    const { operation } = await svc.buildStatus({ operation_id: id }, ctx());
    if (operation.state !== 'running') return operation;
    if (Date.now() > end) throw new Error(`operation ${id} still running`);
    await sleep(5);
  }
}

async function build(
  svc: ImageServiceImpl,
  p: Parameters<ImageServiceImpl['buildBegin']>[0],
): Promise<Operation> {
  const c = ctx();
  await svc.buildBegin(p, c);
  return settled(svc, c.opId);
}

/** Entries of STATE/images and STATE/kernels that are not final directories. */
function leftovers(): string[] {
  const out: string[] = [];
  for (const sub of ['images', 'kernels']) {
    const d = join(stateDir, sub);
    if (existsSync(d)) out.push(...readdirSync(d).filter((n) => n.startsWith('.') || n.includes('.old-')));
  }
  return out;
}

const read = (p: string): string => readFileSync(p, 'utf8');

/** The image row `name` and every file its rows name carry `tag`, and nothing else is left. */
function expectWhole(name: string, tag: string, id: string): void {
  const img = store.images.getByName(name);
  expect(img?.id, `image ${name}'s row`).toBe(id);
  const k = store.kernels.getById(img!.kernelId)!;
  expect(read(img!.rootfsPath)).toBe(`rootfs ${tag}`);
  expect(read(k.kernelPath)).toBe(`kernel ${tag}`);
  expect(read(k.initrdPath!)).toBe(`initrd ${tag}`);
  expect(k.version).toBe(`6.1.0-${tag}`);
  expect(img!.recipeHash).toBe(`hash-${tag}`);
  expect(leftovers()).toEqual([]);
}

describe('a crash during a forced image rebuild', () => {
  for (const point of POINTS) {
    it(`at image.replace.${point}: the start-up sweep leaves ${COMMITTED.has(point) ? 'the new' : 'the old'} image, rows and files agreeing`, async () => {
      expect((await build(service('v1'), { name: 'img' })).state).toBe('succeeded');
      const old = store.images.getByName('img')!;
      const crash = crashAt(`image.replace.${point}`);
      const live = await build(service('v2', crash), { name: 'img', force: true });
      expect(crash.hit()).toBe(true);
      if (!COMMITTED.has(point)) {
        // Without the kill, the live daemon's rollback alone keeps the old image.
        expect(live.state).toBe('failed');
        expectWhole('img', 'v1', old.id);
      }

      restart();
      const committed = COMMITTED.has(point);
      const newRow = store.images.getByName('img')!;
      // The store alone says whether the COMMIT happened.
      expect(newRow.id === old.id).toBe(!committed);
      await service('v3').sweep();
      expectWhole('img', committed ? 'v2' : 'v1', newRow.id);
      // And the image can be rebuilt again afterwards.
      expect((await build(service('v4'), { name: 'img', force: true })).state).toBe('succeeded');
      expectWhole('img', 'v4', store.images.getByName('img')!.id);
    });
  }

  // The same with a real kill -9: a process of its own running the real crash points.
  for (const point of ['commit', 'cleanup']) {
    it(`killed for real (SIGKILL) at image.replace.${point}: the same outcome`, async () => {
      expect((await build(service('v1'), { name: 'img' })).state).toBe('succeeded');
      const old = store.images.getByName('img')!;
      store.close();
      const child = join(import.meta.dirname, '..', 'helpers', 'replace-crash-child.ts');
      const r = spawnSync(process.execPath, [child, stateDir, `image.replace.${point}`, 'v2'], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(r.signal, r.stderr.slice(-2000)).toBe('SIGKILL');
      expect(r.stderr).toContain(`TEST-ONLY crash at image.replace.${point}`);
      store = openStore(join(stateDir, 'banger.db'));
      const committed = COMMITTED.has(point);
      const row = store.images.getByName('img')!;
      expect(row.id === old.id).toBe(!committed);
      await service('v3').sweep();
      expectWhole('img', committed ? 'v2' : 'v1', row.id);
    }, 90_000);
  }

  for (const point of ['move_in', 'commit', 'cleanup']) {
    it(`of a derived image, at image.replace.${point}: the overlay the row names is its own build's`, async () => {
      expect((await build(service('base'), { name: 'base' })).state).toBe('succeeded');
      const from = { name: 'dev', from: 'base', packages: ['python3'] };
      expect((await build(service('d1'), from)).state).toBe('succeeded');
      const old = store.images.getByName('dev')!;
      const crash = crashAt(`image.replace.${point}`);
      await build(service('d2', crash), { ...from, force: true });
      expect(crash.hit()).toBe(true);
      restart();
      await service('d3').sweep();
      const row = store.images.getByName('dev')!;
      const committed = COMMITTED.has(point);
      expect(row.id === old.id).toBe(!committed);
      expect(read(row.rootfsPath)).toBe(committed ? 'qcow2 d2' : 'qcow2 d1');
      expect(row.parentId).toBe(store.images.getByName('base')!.id);
      expect(leftovers()).toEqual([]);
    });
  }
});

describe('replaceDir and recoverReplacements (kernels: a forced pull)', () => {
  const kernels = (): string => join(stateDir, 'kernels');

  function stageKernel(tag: string): string {
    const s = join(kernels(), `.import-${tag}-k`);
    mkdirSync(s, { recursive: true });
    writeFileSync(join(s, 'vmlinuz'), `kernel ${tag}`);
    return s;
  }

  function insertKernel(tag: string): { id: string } {
    return store.kernels.insert({
      name: 'k',
      version: tag,
      kernelPath: join(kernels(), 'k', 'vmlinuz'),
      initrdPath: null,
      source: 'built',
    });
  }

  /** Replace kernel `k` (v1) with v2 as a forced pull does, crashing at `point`. */
  async function replaceKernel(point: string): Promise<void> {
    const finalDir = join(kernels(), 'k');
    renameSync(stageKernel('v1'), finalDir);
    insertKernel('v1');
    const crash = crashAt(`kernel.replace.${point}`);
    const staging = stageKernel('v2');
    try {
      const r = replaceDir({
        store,
        table: store.kernels,
        log: ops.log,
        finalDir,
        staging,
        crash: crash.hook,
        kind: 'kernel',
        rows: () => {
          store.kernels.delete(store.kernels.getByName('k')!.id);
          return insertKernel('v2');
        },
      });
      await finishReplace(r, ops.log, crash.hook, 'kernel');
    } catch {
      // the simulated crash inside the transaction: rolled back
    }
    expect(crash.hit()).toBe(true);
  }

  for (const point of POINTS) {
    it(`at kernel.replace.${point}: recovery leaves the row's own files`, async () => {
      await replaceKernel(point);
      restart();
      const done = await recoverReplacements(kernels(), store.kernels, ops.log);
      const row = store.kernels.getByName('k')!;
      const tag = COMMITTED.has(point) ? 'v2' : 'v1';
      expect(row.version).toBe(tag);
      expect(read(row.kernelPath)).toBe(`kernel ${tag}`);
      expect(readdirSync(kernels()).filter((n) => n.includes('.old-'))).toEqual([]);
      // A journal was there to read once the first move could have happened.
      expect(done.length > 0).toBe(point !== 'journal');
    });
  }

  for (const point of ['move_in', 'commit', 'cleanup']) {
    it(`a forced kernel pull's own recording, crashed at kernel.replace.${point}`, async () => {
      const finalDir = join(kernels(), 'k');
      renameSync(stageKernel('v1'), finalDir);
      insertKernel('v1');
      const crash = crashAt(`kernel.replace.${point}`);
      const pulls = new KernelPulls({
        store,
        ops,
        log: ops.log,
        stateDir,
        cacheDir: join(dir, 'cache'),
        crash: crash.hook,
      });
      const entry: CatalogEntry = {
        release: 'v2',
        package: 'linux-image-v2',
        version: '1',
        flavour: 'cloud-amd64',
        sizeBytes: 1,
        latest: true,
        aliases: [],
      };
      // The step after the pull's downloads: record(name, entry, staging, force), private.
      const record = (pulls as unknown as { record: (...a: unknown[]) => Promise<unknown> }).record.bind(
        pulls,
      );
      await record('k', entry, stageKernel('v2'), true).catch(() => undefined);
      expect(crash.hit()).toBe(true);
      restart();
      await service('x').sweep();
      const row = store.kernels.getByName('k')!;
      const tag = COMMITTED.has(point) ? 'v2' : 'v1';
      expect(row.version).toBe(tag);
      expect(read(row.kernelPath)).toBe(`kernel ${tag}`);
      expect(leftovers()).toEqual([]);
    });
  }

  it('a forced replacement that fails (no crash) restores the old directory and removes its journal', () => {
    const finalDir = join(kernels(), 'k');
    renameSync(stageKernel('v1'), finalDir);
    insertKernel('v1');
    const staging = stageKernel('v2');
    expect(() =>
      replaceDir({
        store,
        table: store.kernels,
        log: ops.log,
        finalDir,
        staging,
        kind: 'kernel',
        // Forgets to delete the old row: refused before anything moves.
        rows: () => ({ id: 'nope' }),
      }),
    ).toThrow(/was kept/);
    expect(read(join(finalDir, 'vmlinuz'))).toBe('kernel v1');
    expect(readdirSync(kernels()).sort()).toEqual(['.import-v2-k', 'k']);
  });

  it('an unreadable journal is left with its old directory (the staging sweep keeps it), a half-written one is removed', async () => {
    const old = join(kernels(), 'k.old-0badf00d');
    mkdirSync(old, { recursive: true });
    writeFileSync(`${old}.journal`, '{"old_row":');
    writeFileSync(join(kernels(), 'k.old-12345678.journal.tmp'), '{');
    const done = await recoverReplacements(kernels(), store.kernels, ops.log);
    expect(done).toEqual([]);
    await service('x').sweep();
    expect(readdirSync(kernels()).sort()).toEqual(['k.old-0badf00d', 'k.old-0badf00d.journal']);
    expect(logs.lines.join('\n')).toContain('unreadable replacement journal');
  });

  it('sets the old directory aside under a name no kernel or image can have, its journal beside it', async () => {
    await replaceKernel('commit');
    const names = readdirSync(join(dir, 'crashed', 'kernels')).filter((n) => n.includes('.old-'));
    expect(names.sort()).toEqual([
      expect.stringMatching(/^\.old-[0-9a-f]{8}-k$/),
      expect.stringMatching(/^\.old-[0-9a-f]{8}-k\.journal$/),
    ]);
    // An unreadable journal of this form is kept with its directory; a half-written one goes.
    const old = join(kernels(), '.old-0badf00d-k2');
    mkdirSync(old, { recursive: true });
    writeFileSync(`${old}.journal`, '{"old_row":');
    writeFileSync(join(kernels(), '.old-12345678-k2.journal.tmp'), '{');
    expect(await recoverReplacements(kernels(), store.kernels, ops.log)).toEqual([]);
    await service('x').sweep();
    expect(
      readdirSync(kernels())
        .filter((n) => n.includes('.old-'))
        .sort(),
    ).toEqual(['.old-0badf00d-k2', '.old-0badf00d-k2.journal']);
  });

  it('a journal of the earlier form (<name>.old-<hex>.journal) is still recovered', async () => {
    const finalDir = join(kernels(), 'k');
    renameSync(stageKernel('v2'), finalDir);
    const row = insertKernel('v2');
    const old = join(kernels(), 'k.old-0000abcd');
    renameSync(stageKernel('v1'), old);
    // Committed: the replaced row is gone, the new one is there.
    writeFileSync(`${old}.journal`, JSON.stringify({ old_row: 'gone', new_row: row.id, had_old_dir: true }));
    const done = await recoverReplacements(kernels(), store.kernels, ops.log);
    expect(done).toEqual(['kernels/k: committed: removed the old files']);
    expect(readdirSync(kernels())).toEqual(['k']);
  });

  it('images named like a journal or a set-aside directory of the earlier form are images: the sweep keeps them', async () => {
    const names = ['x.journal.tmp', 'web.old-1', 'y.old-ab.journal', 'z.old-cd'];
    for (const name of names) expect((await build(service('v1'), { name })).state).toBe('succeeded');
    await service('v2').sweep();
    for (const name of names) {
      const img = store.images.getByName(name);
      expect(img, name).toBeDefined();
      expect(read(img!.rootfsPath)).toBe('rootfs v1');
    }
    // And one is rebuilt over (set aside and removed) like any other.
    expect((await build(service('v3'), { name: 'web.old-1', force: true })).state).toBe('succeeded');
    expect(read(store.images.getByName('web.old-1')!.rootfsPath)).toBe('rootfs v3');
    expect(leftovers().filter((n) => n.startsWith('.'))).toEqual([]);
  });
});
