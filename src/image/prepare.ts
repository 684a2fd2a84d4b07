// Preparing an image's root filesystem in a short-lived "prepare VM": banger's kernel and
// initramfs boot with `banger.prepare` (src/image/initramfs.ts), which mounts the target disk
// read-write, configures QEMU's user-mode network and runs prepare.sh from a second small disk
// chrooted into it, then powers off after printing `banger-prepare-exit=N` on the serial console.
// makeBootable (OCI images) and derived builds (image build --from) both go through runPrepare.
// No root is needed: QEMU writes the disk, and the guest's own package manager runs as the
// guest's root.
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { probeAccel } from '../engine/accel.ts';
import type { Accel } from '../engine/driver.ts';
import { buildQemuArgv, DEFAULT_QEMU_BINARY, hostTscKhz } from '../engine/qemu-argv.ts';
import { stageGuestFiles } from './builder.ts';
import { AbortedError, processAlive, run } from './exec.ts';
import { PREP_LABEL, PREPARE_EXIT_MARKER } from './initramfs.ts';
import {
  BOOTABLE_PACKAGES,
  familyOf,
  generatePrepareScript,
  INSTALLED_MARKER,
  installedPackages,
  missingPackages,
  parseOsRelease,
  unsupportedFamilyMessage,
  type OsRelease,
} from './prepare-script.ts';
import { DEFAULT_RECIPE, findGuestDir } from './recipe.ts';
import { generateCustomizeScript } from './rootfs.ts';
import { releasePort, reservePort } from '../vm/ports.ts';

/** Guest side of QEMU's user-mode network (its defaults): address, gateway (the host), DNS. */
export const PREP_NET = { guest: '10.0.2.15', gateway: '10.0.2.2', dns: '10.0.2.3', mask: '255.255.255.0' };
export const DEFAULT_PREPARE_TIMEOUT_MS = 15 * 60_000;

/** A prepare run that did not succeed; `log` is the serial log's path, `tail` its last lines. */
export class PrepareError extends Error {
  readonly log: string;
  readonly tail: string;
  readonly exitCode: number | null;
  constructor(message: string, log: string, tail: string, exitCode: number | null) {
    super(tail ? `${message}; last lines of ${log}:\n${tail}` : message);
    this.name = 'PrepareError';
    this.log = log;
    this.tail = tail;
    this.exitCode = exitCode;
  }
}

export interface PrepFile {
  /** Path on the prepare disk (relative); the guest sees it under /.banger-prep/. */
  path: string;
  content: string | Uint8Array;
  mode?: number;
}

export interface RunPrepareOptions {
  /** The disk to prepare (written in place). */
  disk: { path: string; format: 'raw' | 'qcow2' };
  kernelPath: string;
  initrdPath: string;
  /** Ours to write: the prepare disk and the serial log (prepare-serial.log) go here. */
  workDir: string;
  /** prepare.sh (generatePrepareScript). */
  script: string;
  /** More files on the prepare disk (customize.sh, run-script, ...). */
  files?: PrepFile[];
  /** Put the recipe's guest/ files (compiled where needed) on the disk under guest/. */
  guestFiles?: boolean;
  /** Label of the target's root filesystem (default banger-root). */
  rootLabel?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Each line prepare.sh prints, as it prints it. */
  onProgress?: (line: string) => void;
  qemu?: string;
  /** Default: probed (TCG when /dev/kvm is unusable). */
  accel?: Accel;
  memoryMiB?: number;
  vcpus?: number;
}

export interface RunPrepareResult {
  /** The serial log (kept in workDir). */
  log: string;
  /** Everything prepare.sh printed. */
  output: string;
  durationMs: number;
}

/** The exit status in a prepare boot's console output (the last marker line), or null. */
export function parsePrepareExit(console: string): number | null {
  let code: number | null = null;
  const re = new RegExp(`^${PREPARE_EXIT_MARKER}(\\d+)\\s*$`, 'gm');
  for (const m of console.matchAll(re)) code = Number(m[1]);
  return code;
}

/** The last n non-empty lines, without carriage returns. */
export function tailLines(text: string, n = 30): string {
  return text
    .replace(/\r/g, '')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-n)
    .join('\n');
}

/** The prepare disk: a small ext4 (label banger-prep) made from a staging dir by mkfs.ext4 -d. */
async function buildPrepDisk(o: RunPrepareOptions, path: string): Promise<void> {
  const tree = await mkdtemp(join(o.workDir, 'prep-tree-'));
  try {
    await writeFile(join(tree, 'prepare.sh'), o.script, { mode: 0o755 });
    await writeFile(join(tree, 'resolv.conf'), `nameserver ${PREP_NET.dns}\n`);
    for (const f of o.files ?? []) {
      const p = join(tree, f.path);
      await mkdir(join(p, '..'), { recursive: true });
      await writeFile(p, f.content);
      await chmod(p, f.mode ?? 0o644);
    }
    if (o.guestFiles) await stageGuestFiles(DEFAULT_RECIPE, findGuestDir(), join(tree, 'guest'), o.signal);
    const { stdout } = await run(['du', '-sk', tree], { signal: o.signal });
    const kib = Number(stdout.split(/\s/)[0]) || 0;
    await run(
      ['mkfs.ext4', '-q', '-F', '-L', PREP_LABEL, '-O', '^has_journal', '-m', '0', '-E', 'root_owner=0:0',
        '-d', tree, path, `${Math.max(8192, kib * 2 + 4096)}k`],
      { signal: o.signal },
    ); // prettier-ignore
  } finally {
    await rm(tree, { recursive: true, force: true });
  }
}

/**
 * Throws unless the initramfs knows `banger.prepare` (one built before prepare mode would boot
 * the image normally and never power off).
 */
export async function assertPrepareCapable(initrdPath: string): Promise<void> {
  let data = await readFile(initrdPath);
  if (data[0] === 0x1f && data[1] === 0x8b) data = gunzipSync(data);
  if (!data.includes(PREPARE_EXIT_MARKER)) {
    throw new Error(
      `${initrdPath} has no prepare mode (built by an older banger): rebuild the image whose kernel this is (banger image build --force)`,
    );
  }
}

/** Boot the prepare VM on o.disk and wait for prepare.sh's exit; throws PrepareError unless 0. */
/** Where runPrepare keeps its QEMU pidfile and QMP socket (short: socket paths are limited). */
const PREP_TMP_PREFIX = 'banger-prep-';

/**
 * Remove prepare-VM scratch dirs (`$TMPDIR/banger-prep-*`) left by a daemon that died mid-prepare:
 * only this uid's, and only when the QEMU named by its pidfile is gone (the VMM itself is killed by
 * the start-up orphan sweep, which finds it by the state dir its argv names; a dir without a pidfile
 * is left for a minute, it may be a prepare that is starting). Returns what it removed.
 */
export async function sweepPrepareTmp(dir = tmpdir(), uid = process.getuid?.() ?? 0): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith(PREP_TMP_PREFIX)) continue;
    const path = join(dir, name);
    const st = await stat(path).catch(() => undefined);
    if (!st?.isDirectory() || st.uid !== uid) continue;
    const pid = Number((await readFile(join(path, 'qemu.pid'), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) continue;
    // No pidfile yet may mean a prepare of another daemon of this uid that is just starting QEMU.
    if (pid === 0 && Date.now() - st.mtimeMs < 60_000) continue;
    await rm(path, { recursive: true, force: true });
    removed.push(path);
  }
  return removed;
}

export async function runPrepare(o: RunPrepareOptions): Promise<RunPrepareResult> {
  const t0 = performance.now();
  await mkdir(o.workDir, { recursive: true });
  const log = join(o.workDir, 'prepare-serial.log');
  const prepDisk = join(o.workDir, 'prepare-disk.ext4');
  await rm(log, { force: true });
  await assertPrepareCapable(o.initrdPath);
  await buildPrepDisk(o, prepDisk);
  const accel = o.accel ?? (await probeAccel({ config: 'auto', kernel: o.kernelPath })).accel;
  // QEMU's pidfile and QMP socket: a short path (socket paths are limited to 107 bytes).
  const vmDir = await mkdtemp(join(tmpdir(), PREP_TMP_PREFIX));
  const n = PREP_NET;
  // Reserved like a VM's, so a VM create running meanwhile cannot be handed the same port.
  const sshHostPort = await reservePort();
  const argv = buildQemuArgv(
    {
      id: 'banger-prepare',
      vmDir,
      kernel: o.kernelPath,
      initrd: o.initrdPath,
      cmdline:
        `root=LABEL=${o.rootLabel ?? DEFAULT_RECIPE.rootLabel} rw banger.prepare quiet ` +
        `ip=${n.guest}::${n.gateway}:${n.mask}:banger-prepare:eth0:off:${n.dns}`,
      vcpus: o.vcpus ?? 2,
      memoryMiB: o.memoryMiB ?? 1024,
      disks: [o.disk, { path: prepDisk, format: 'raw' }],
      // The forward is unused (nothing listens on 22 in a prepare boot) but the builder wants one.
      net: { mode: 'user', sshHostPort },
      serialLog: log,
      accel,
    },
    { hostTscKhz: hostTscKhz(), binary: o.qemu },
  );
  // Discards from the guest's fstrim free the target's blocks (qcow2 clusters, raw holes).
  const target = argv.findIndex((a) => a.startsWith('id=disk0,'));
  if (target >= 0) argv[target] += ',discard=unmap';
  const timeoutMs = o.timeoutMs ?? DEFAULT_PREPARE_TIMEOUT_MS;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = o.signal ? AbortSignal.any([o.signal, timeout]) : timeout;
  let offset = 0;
  let partial = '';
  let started = false;
  const output: string[] = [];
  // The serial log is read as it grows: prepare.sh's lines go to onProgress while it runs.
  const pump = async (): Promise<void> => {
    const fh = await open(log, 'r').catch(() => undefined);
    if (!fh) return;
    try {
      const { size } = await fh.stat();
      if (size <= offset) return;
      const buf = Buffer.alloc(size - offset);
      await fh.read(buf, 0, buf.length, offset);
      offset = size;
      const lines = (partial + buf.toString('utf8')).replace(/\r/g, '').split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) {
        if (!started) {
          started = l.includes('prepare: running prepare.sh');
          continue;
        }
        // The marker, and kernel messages that reach the console (the final power-down, say).
        if (l.startsWith(PREPARE_EXIT_MARKER) || /^\[\s*\d+\.\d+\]/.test(l)) continue;
        output.push(l);
        o.onProgress?.(l);
      }
    } finally {
      await fh.close();
    }
  };
  const timer = setInterval(() => void pump().catch(() => undefined), 500);
  try {
    await run([o.qemu ?? DEFAULT_QEMU_BINARY, ...argv], { signal, killGraceMs: 2000 });
  } catch (err) {
    const text = await readFile(log, 'utf8').catch(() => '');
    if (err instanceof AbortedError) {
      if (o.signal?.aborted) throw err;
      throw new PrepareError(
        `prepare VM timed out after ${Math.round(timeoutMs / 1000)} s`,
        log,
        tailLines(text),
        null,
      );
    }
    throw new PrepareError(`prepare VM failed: ${(err as Error).message}`, log, tailLines(text), null);
  } finally {
    clearInterval(timer);
    releasePort(sshHostPort);
    await rm(vmDir, { recursive: true, force: true });
    await rm(prepDisk, { force: true });
  }
  await pump();
  const text = await readFile(log, 'utf8').catch(() => '');
  const code = parsePrepareExit(text);
  if (code === null) {
    throw new PrepareError(
      'the prepare VM powered off without reporting an exit status',
      log,
      tailLines(text),
      null,
    );
  }
  if (code !== 0)
    throw new PrepareError(`prepare script exited with status ${code}`, log, tailLines(text), code);
  return { log, output: output.join('\n'), durationMs: Math.round(performance.now() - t0) };
}

/** A file of an ext4 image (debugfs cat; '' when missing). Symlinks are not followed. */
async function catInImage(image: string, path: string, signal?: AbortSignal): Promise<string> {
  const { stdout } = await run(['debugfs', '-R', `cat ${path}`, image], { signal });
  return stdout;
}

/** os-release of a raw ext4 image (/etc/os-release is often a symlink to /usr/lib/os-release). */
export async function readImageOsRelease(
  image: string,
  signal?: AbortSignal,
): Promise<OsRelease | undefined> {
  for (const p of ['/etc/os-release', '/usr/lib/os-release']) {
    const text = await catInImage(image, p, signal);
    if (/^ID=/m.test(text)) return parseOsRelease(text);
  }
  return undefined;
}

export interface MakeBootableOptions {
  /** Raw ext4, written in place. */
  rootfsPath: string;
  kernelPath: string;
  initrdPath: string;
  workDir: string;
  aptSources?: string;
  signal?: AbortSignal;
  onProgress?: (line: string) => void;
  qemu?: string;
  timeoutMs?: number;
  accel?: Accel;
}

export interface MakeBootableResult {
  family: string;
  installed: string[];
  log: string;
}

/**
 * Make a flattened image's root filesystem bootable by banger: detect its family from
 * os-release (before booting anything), then in a prepare VM install what banger's guest needs
 * and is missing with the image's own apt, plus banger's guest files and units (as the default
 * image's customize hook does). The filesystem is labelled banger-root, as VMs mount it.
 */
export async function makeBootable(o: MakeBootableOptions): Promise<MakeBootableResult> {
  const os = await readImageOsRelease(o.rootfsPath, o.signal);
  if (!os) throw new Error('the image has no /etc/os-release: cannot tell how to make it bootable');
  if (familyOf(os) !== 'debian') throw new Error(unsupportedFamilyMessage(os));
  const status = await catInImage(o.rootfsPath, '/var/lib/dpkg/status', o.signal);
  const installed = installedPackages(status);
  const required = missingPackages(installed, BOOTABLE_PACKAGES.required);
  const optional = missingPackages(installed, BOOTABLE_PACKAGES.optional);
  o.onProgress?.(
    `${os.prettyName ?? os.id}: ` +
      (required.length + optional.length > 0
        ? `installing ${[...required, ...optional].join(', ')} (optional: ${optional.join(', ') || 'none'})`
        : 'has every package banger needs'),
  );
  const label = DEFAULT_RECIPE.rootLabel;
  await run(['e2label', o.rootfsPath, label], { signal: o.signal });
  const st = await stat(o.rootfsPath);
  if (!st.isFile()) throw new Error(`${o.rootfsPath} is not a file`);
  const r = await runPrepare({
    disk: { path: o.rootfsPath, format: 'raw' },
    kernelPath: o.kernelPath,
    initrdPath: o.initrdPath,
    workDir: o.workDir,
    script: generatePrepareScript({
      install: required,
      optional,
      aptSources: o.aptSources,
      customize: true,
      userScript: false,
    }),
    files: [{ path: 'customize.sh', content: generateCustomizeScript(DEFAULT_RECIPE), mode: 0o755 }],
    guestFiles: true,
    rootLabel: label,
    signal: o.signal,
    onProgress: o.onProgress,
    qemu: o.qemu,
    timeoutMs: o.timeoutMs,
    accel: o.accel,
  });
  return { family: os.id, installed: parseInstalled(r.output), log: r.log };
}

/** What prepare.sh's INSTALLED_MARKER line lists (none when apt did not run). */
export function parseInstalled(output: string): string[] {
  const line = output
    .split('\n')
    .reverse()
    .find((l) => l.startsWith(INSTALLED_MARKER));
  return line ? line.slice(INSTALLED_MARKER.length).split(/\s+/).filter(Boolean) : [];
}
