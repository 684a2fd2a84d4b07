// Warm templates, the pure and file-level parts: the clone's QEMU command line against the
// template's (QEMU refuses a saved state whose devices differ; the clone maps the template's RAM
// file copy-on-write), keys and their invalidation, finding and sweeping templates on disk, and
// the RAM file's write bit while a clone's QEMU opens it.
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.ts';
import type { VmLaunchSpec } from '../../src/engine/driver.ts';
import { FakeVmmDriver } from '../../src/engine/fake.ts';
import { buildQemuArgv } from '../../src/engine/qemu-argv.ts';
import { findStateDirVmms } from '../../src/vm/orphans.ts';
import { createLogger } from '../../src/log/logger.ts';
import type { ImageRow, KernelRow } from '../../src/store/index.ts';
import { vmFiles } from '../../src/vm/layout.ts';
import { guestCmdline } from '../../src/vm/machine.ts';
import {
  TEMPLATE_MANIFEST,
  WARM_FORMAT,
  cloneLaunchSpec,
  findTemplate,
  formatRestoreTimes,
  startClone,
  startFromSharedState,
  holdRamOpenable,
  listTemplates,
  sweepTemplates,
  templateDir,
  warmKey,
  warmKeyHash,
  type RamFileOps,
  type TemplateManifest,
  type WarmSpec,
} from '../../src/vm/warm.ts';

const TSC = 2_445_426;
const root = mkdtempSync(join(tmpdir(), 'banger-warm-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const STATE = '/var/lib/banger';

function templateSpec(mode: 'user' | 'bridge'): VmLaunchSpec {
  const dir = `${STATE}/images/debian-bookworm/warm/0123456789abcdef`;
  return {
    id: 'warm-0123456789abcdef',
    vmDir: dir,
    kernel: '/var/lib/banger/images/debian-bookworm/vmlinuz',
    initrd: '/var/lib/banger/images/debian-bookworm/initrd.cpio.gz',
    cmdline: guestCmdline({ name: 'banger-warm', networkMode: mode }),
    vcpus: 2,
    memoryMiB: 768,
    disks: [
      { path: `${dir}/disk.qcow2`, format: 'qcow2' },
      { path: `${dir}/seed.ext4`, format: 'raw', readOnly: true },
    ],
    net:
      mode === 'user'
        ? { mode: 'user', sshHostPort: 40001, mac: '52:54:01:23:45:67' }
        : { mode: 'tap', tap: 'bgtb0123456789a', mac: '52:54:01:23:45:67' },
    serialLog: `${dir}/serial.log`,
    agentSocket: `${dir}/agent.sock`,
    qgaSocket: `${dir}/qga.sock`,
    accel: 'tcg',
    tscKhz: TSC,
    memory: { backendFile: `${dir}/ram`, share: true },
  };
}

/** The value following `flag` (first occurrence). */
function after(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i < 0 ? undefined : argv[i + 1];
}

describe('a clone runs the template’s exact VMM configuration', () => {
  for (const mode of ['user', 'bridge'] as const) {
    it(`${mode} networking: the argvs differ only in per-VM paths, port or tap, share=off, plus -incoming defer`, () => {
      const tpl = templateSpec(mode);
      const files = vmFiles('/home/u/.local/state/banger', 'a1b2c3d4e5f6');
      const clone = cloneLaunchSpec(tpl, {
        id: 'a1b2c3d4e5f6',
        files,
        ...(mode === 'user' ? { sshHostPort: 40777 } : { tap: 'bgta1b2c3d4e5f6' }),
      });
      // Both come from the same builder; no host TSC is passed: the template pinned its rate.
      const a = buildQemuArgv(tpl);
      const b = buildQemuArgv(clone);
      // The state is loaded later through QMP (x-ignore-shared first): -incoming defer.
      expect(b.slice(-2)).toEqual(['-incoming', 'defer']);
      expect(a).not.toContain('-incoming');
      // The same RAM file, the template's: written through by the template, copy-on-write in the clone.
      const ram = `memory-backend-file,id=mem,size=768M,mem-path=${tpl.vmDir}/ram`;
      expect(after(a, '-object')).toBe(`${ram},share=on`);
      expect(after(b, '-object')).toBe(`${ram},share=off`);
      expect(a.filter((x) => x === '-object')).toHaveLength(1);
      expect(b.filter((x) => x === '-object')).toHaveLength(1);
      expect(after(a, '-M')).toBe('microvm,memory-backend=mem');
      const norm = (argv: string[], dir: string, id: string, port: string, tap: string): string[] =>
        argv.map((x) =>
          x.replaceAll(tap, 'TAP').replaceAll(dir, 'DIR').replaceAll(id, 'ID').replaceAll(port, 'PORT'),
        );
      const [tp, cp] = mode === 'user' ? ['40001', '40777'] : ['@@', '@@'];
      const [tt, ct] = mode === 'user' ? ['@@', '@@'] : ['bgtb0123456789a', 'bgta1b2c3d4e5f6'];
      // The clone's files have other names in its directory: map them onto the template's.
      // The RAM file stays the template's (checked above): compare the rest.
      const cloneNamed = b
        .slice(0, -2)
        .map((x) => x.replace(`${files.dir}/root.qcow2`, `${files.dir}/disk.qcow2`))
        .map((x) => (x === `${ram},share=off` ? `${ram.replace(tpl.vmDir, files.dir)},share=on` : x));
      expect(norm(cloneNamed, files.dir, 'a1b2c3d4e5f6', cp, ct)).toEqual(
        norm(a, tpl.vmDir, 'warm-0123456789abcdef', tp, tt),
      );
      // What QEMU checks on restore is identical, not merely equivalent.
      for (const flag of ['-M', '-m', '-smp', '-accel', '-append', '-kernel', '-initrd']) {
        expect(b[b.indexOf(flag) + 1]).toBe(a[a.indexOf(flag) + 1]);
      }
      expect(b.filter((x) => x.startsWith('virtio') || x.startsWith('virtserialport'))).toEqual(
        a.filter((x) => x.startsWith('virtio') || x.startsWith('virtserialport')),
      );
    });
  }

  it('a running clone is found as the VMM of its own directory, not of the template whose RAM it maps', () => {
    const id = 'a1b2c3d4e5f6';
    const files = vmFiles(STATE, id);
    const argv = buildQemuArgv(cloneLaunchSpec(templateSpec('user'), { id, files, sshHostPort: 40777 }));
    expect(argv.some((x) => x.includes(`${STATE}/images/debian-bookworm/warm/0123456789abcdef/ram`))).toBe(
      true,
    );
    // A fake /proc with that one process: what reconciliation reads to find VMMs by directory.
    const proc = join(root, 'proc');
    mkdirSync(join(proc, '4242'), { recursive: true });
    writeFileSync(
      join(proc, '4242', 'status'),
      'Name:\tqemu-system-x86\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\n',
    );
    writeFileSync(join(proc, '4242', 'comm'), 'qemu-system-x86\n');
    writeFileSync(join(proc, '4242', 'cmdline'), ['qemu-system-x86_64', ...argv, ''].join('\0'));
    expect(findStateDirVmms(STATE, 1000, proc)).toEqual([
      expect.objectContaining({ pid: 4242, dir: files.dir }),
    ]);
  });

  it('refuses a template spec without exactly the two disks, or without its RAM in a shared file', () => {
    const tpl = { ...templateSpec('user'), disks: [templateSpec('user').disks[0]!] };
    const target = { id: 'a1b2c3d4e5f6', files: vmFiles('/s', 'a1b2c3d4e5f6'), sshHostPort: 1 };
    expect(() => cloneLaunchSpec(tpl, target)).toThrow(/two disks/);
    const { memory: _m, ...anonymous } = templateSpec('user');
    expect(() => cloneLaunchSpec(anonymous, target)).toThrow(/shared file/);
    const privateRam = { ...templateSpec('user'), memory: { backendFile: '/x/ram', share: false } };
    expect(() => cloneLaunchSpec(privateRam, target)).toThrow(/shared file/);
  });

  it('refuses a user-network clone without its port and a bridged one without its tap', () => {
    const files = vmFiles('/s', 'a1b2c3d4e5f6');
    expect(() => cloneLaunchSpec(templateSpec('user'), { id: 'a1b2c3d4e5f6', files })).toThrow(/port/);
    expect(() => cloneLaunchSpec(templateSpec('bridge'), { id: 'a1b2c3d4e5f6', files })).toThrow(/tap/);
  });
});

describe('the template RAM file while clones open it', () => {
  /** A file system where `writable` says whether this process may open the file read-write. */
  function fakeFs(writable: boolean): RamFileOps & { calls: string[] } {
    const calls: string[] = [];
    let mode = 0o444;
    return {
      calls,
      canWrite: () => writable || (mode & 0o200) !== 0,
      chmod: (path, m) => {
        mode = m;
        calls.push(`${path} ${m.toString(8)}`);
      },
    };
  }

  it('non-root: the first opener gets the write bit, the last one to release takes it back', () => {
    const fs = fakeFs(false);
    const r1 = holdRamOpenable('/t/ram', fs);
    const r2 = holdRamOpenable('/t/ram', fs);
    expect(fs.calls).toEqual(['/t/ram 644']);
    r1();
    r1(); // twice is once
    expect(fs.calls).toEqual(['/t/ram 644']);
    r2();
    expect(fs.calls).toEqual(['/t/ram 644', '/t/ram 444']);
    // The next start grants it again.
    const r3 = holdRamOpenable('/t/ram', fs);
    r3();
    expect(fs.calls).toEqual(['/t/ram 644', '/t/ram 444', '/t/ram 644', '/t/ram 444']);
  });

  it('root (may open it anyway): the mode is never touched', () => {
    const fs = fakeFs(true);
    holdRamOpenable('/t/ram2', fs)();
    expect(fs.calls).toEqual([]);
  });
});

function fakeImage(dir: string): { image: ImageRow; kernel: KernelRow } {
  mkdirSync(dir, { recursive: true });
  for (const f of ['rootfs.ext4', 'vmlinuz', 'initrd.cpio.gz']) writeFileSync(join(dir, f), f);
  const image: ImageRow = {
    id: 'img1',
    name: 'debian-bookworm',
    kernelId: 'k1',
    rootfsPath: join(dir, 'rootfs.ext4'),
    rootfsFormat: 'raw',
    sizeBytes: 11,
    recipeHash: 'abc',
    source: 'built',
    isDefault: true,
    createdAt: new Date().toISOString(),
  } as ImageRow;
  const kernel = {
    id: 'k1',
    name: 'debian-bookworm',
    version: '6.1',
    kernelPath: join(dir, 'vmlinuz'),
    initrdPath: join(dir, 'initrd.cpio.gz'),
    modulesDir: null,
    source: 'built',
    createdAt: new Date().toISOString(),
  } as KernelRow;
  return { image, kernel };
}

const SPEC: WarmSpec = { vcpus: 2, memoryMib: 768, diskSizeBytes: 3 << 30, networkMode: 'user' };
const ENGINE = { version: 'QEMU emulator version 7.2.0', accel: 'tcg' as const };

describe('template keys', () => {
  const { image, kernel } = fakeImage(join(root, 'keys'));

  it('are stable for the same inputs', async () => {
    const a = warmKeyHash(await warmKey(image, kernel, SPEC, ENGINE));
    const b = warmKeyHash(await warmKey(image, kernel, { ...SPEC }, { ...ENGINE }));
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(b).toBe(a);
  });

  it('change with every part: spec, engine, accelerator, image and kernel files', async () => {
    const base = warmKeyHash(await warmKey(image, kernel, SPEC, ENGINE));
    const variants = [
      await warmKey(image, kernel, { ...SPEC, vcpus: 1 }, ENGINE),
      await warmKey(image, kernel, { ...SPEC, memoryMib: 1024 }, ENGINE),
      await warmKey(image, kernel, { ...SPEC, diskSizeBytes: 4 << 30 }, ENGINE),
      await warmKey(image, kernel, { ...SPEC, networkMode: 'bridge' }, ENGINE),
      await warmKey(image, kernel, SPEC, { ...ENGINE, version: 'QEMU emulator version 8.0.0' }),
      await warmKey(image, kernel, SPEC, { ...ENGINE, accel: 'kvm' }),
      await warmKey({ ...image, id: 'img2' }, kernel, SPEC, ENGINE),
    ];
    const hashes = new Set([base, ...variants.map(warmKeyHash)]);
    expect(hashes.size).toBe(variants.length + 1);
    // Rewriting the image's root filesystem (a rebuild in place) is a new key too.
    const past = new Date(Date.now() - 60_000);
    utimesSync(image.rootfsPath, past, past);
    expect(warmKeyHash(await warmKey(image, kernel, SPEC, ENGINE))).not.toBe(base);
    utimesSync(kernel.kernelPath, past, past);
  });
});

async function writeTemplate(image: ImageRow, kernel: KernelRow, spec: WarmSpec): Promise<string> {
  const key = await warmKey(image, kernel, spec, ENGINE);
  const hash = warmKeyHash(key);
  const dir = templateDir(image, hash);
  mkdirSync(dir, { recursive: true });
  for (const f of ['disk.qcow2', 'seed.ext4', 'state', 'ram']) writeFileSync(join(dir, f), f);
  const m: TemplateManifest = {
    format: WARM_FORMAT,
    keyHash: hash,
    key,
    spec: templateSpec('user'),
    createdAt: new Date().toISOString(),
    bootMs: 1,
    saveMs: 1,
    stateBytes: 5,
    ramFile: join(dir, 'ram'),
    ramBytes: 3,
  };
  writeFileSync(join(dir, TEMPLATE_MANIFEST), JSON.stringify(m));
  return hash;
}

describe('templates on disk', () => {
  const log = createLogger({ name: 't', quiet: true });

  it('a finished template is found by its key; an unfinished directory is not', async () => {
    const { image, kernel } = fakeImage(join(root, 'find'));
    const hash = await writeTemplate(image, kernel, SPEC);
    const t = await findTemplate(image, hash);
    expect(t?.manifest.keyHash).toBe(hash);
    expect(t?.disk).toBe(join(templateDir(image, hash), 'disk.qcow2'));
    rmSync(join(templateDir(image, hash), TEMPLATE_MANIFEST));
    expect(await findTemplate(image, hash)).toBeUndefined();
  });

  it('sweeping removes stale and unfinished templates, keeps current ones and those VMs back on', async () => {
    const { image, kernel } = fakeImage(join(root, 'sweep'));
    const current = await writeTemplate(image, kernel, SPEC);
    const other = await writeTemplate(image, kernel, { ...SPEC, vcpus: 1 });
    mkdirSync(join(templateDir(image, 'f'.repeat(64))), { recursive: true }); // unfinished
    // The image changes: both templates are stale now; one still backs a VM's disk.
    const past = new Date(Date.now() - 120_000);
    utimesSync(image.rootfsPath, past, past);
    const fresh = await writeTemplate(image, kernel, SPEC);
    const removed = await sweepTemplates(image, kernel, ENGINE, (h) => h === other.slice(0, 16), log);
    expect(removed.sort()).toEqual([current.slice(0, 16), 'f'.repeat(16)].sort());
    const left = (await listTemplates(image)).map((t) => t.hash16).sort();
    expect(left).toEqual([fresh.slice(0, 16), other.slice(0, 16)].sort());
  });
});

describe('config [warm]', () => {
  it('auto defaults off and takes a boolean', () => {
    expect(parseConfig('').warm.auto).toBe(false);
    expect(parseConfig('[warm]\nauto = true\n').warm.auto).toBe(true);
    expect(() => parseConfig('[warm]\nauto = "yes"\n')).toThrow(/warm.auto/);
    expect(() => parseConfig('[warm]\nspeed = 1\n')).toThrow(/warm.speed/);
  });
});

describe('restoring a clone says where the time went', () => {
  it('formats the restore step detail', () => {
    expect(formatRestoreTimes({ startMs: 62, loadMs: 85, resumeMs: 3 })).toBe(
      'QEMU up 62 ms, state loaded 85 ms, cont 3 ms',
    );
  });

  it('starts the VMM, loads the state with x-ignore-shared, continues it, and times each', async () => {
    const dir = mkdtempSync(join(root, 'restore-'));
    const tplSpec: VmLaunchSpec = { ...templateSpec('user'), vmDir: dir };
    const ram = join(dir, 'ram');
    writeFileSync(ram, '');
    tplSpec.memory = { backendFile: ram, share: true };
    const driver = new FakeVmmDriver();
    const log = createLogger({ name: 't', quiet: true });
    const tpl = await driver.start(driver.prepare(tplSpec));
    const state = join(dir, 'state');
    await tpl.saveState!(state, { ignoreShared: true });
    const files = vmFiles(join(dir, 'state-dir'), 'c0ffee000001');
    const spec = cloneLaunchSpec(tplSpec, { id: 'c0ffee000001', files, sshHostPort: 40100 });
    const r = await startFromSharedState({ driver, log }, spec, state);
    for (const k of ['startMs', 'loadMs', 'resumeMs'] as const) expect(r[k]).toBeGreaterThanOrEqual(0);
    expect(driver.transcript.filter((o) => o.target === 'c0ffee000001').map((o) => o.op)).toEqual([
      'prepare',
      'start',
      'loadState',
      'resume',
    ]);
    expect(driver.transcript.find((o) => o.op === 'loadState')?.detail).toMatchObject({
      path: state,
      ignoreShared: true,
    });
    expect(await r.handle.status()).toBe('running');

    // startClone hands the same times to its caller (the restore step's detail).
    let heard: unknown;
    const files2 = vmFiles(join(dir, 'state-dir'), 'c0ffee000002');
    const manifest = { spec: tplSpec } as TemplateManifest;
    await startClone(
      { driver, log },
      { dir, manifest, disk: join(dir, 'disk.qcow2'), state, ram },
      { id: 'c0ffee000002', files: files2, sshHostPort: 40101 },
      (t) => (heard = t),
    );
    expect(heard).toMatchObject({ startMs: expect.any(Number), loadMs: expect.any(Number) });
  });
});
