// Which accelerator can QEMU really use here? /dev/kvm existing is not enough: on a PVM host
// KVM_CREATE_VM works and QMP's query-kvm says enabled, but stock guest kernels hang early and
// then die with an emulation failure. So the probe boots the real guest kernel under
// `-accel kvm` with a tiny initramfs that prints a marker, and falls back to TCG otherwise.
//
// Cost: a working KVM answers in well under a second; a broken one costs the whole timeout
// (default 10 s, one vCPU spinning). The answer is memoized per process and may be cached in a
// file keyed by QEMU version + kernel + host kernel release, so a daemon pays it once.
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import { constants, existsSync } from 'node:fs';
import { access, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { writeFileAtomic } from '../util/atomic-write.ts';
import type { Accel } from './driver.ts';
import { busyboxInitramfs } from './cpio.ts';
import { EngineError } from './errors.ts';
import { silentLogger, type EngineLogger } from './log.ts';
import { sleep } from './process.ts';
import { DEFAULT_QEMU_BINARY, hostTscKhz } from './qemu-argv.ts';

const execFileP = promisify(execFile);

export const PROBE_MARKER = 'BANGER_ACCEL_PROBE_OK';

export interface AccelProbeOptions {
  config: 'auto' | 'kvm' | 'tcg';
  /** The guest kernel to test-boot. Without it KVM cannot be verified (see `verified`). */
  kernel?: string;
  /** Used only when no busybox is available to build the probe initramfs. */
  initrd?: string;
  qemuBinary?: string;
  /** Static busybox for the probe initramfs. Default /bin/busybox. */
  busybox?: string;
  /** Test-boot limit. Default 10 s. */
  timeoutMs?: number;
  /** JSON file remembering answers across daemon starts. */
  cacheFile?: string;
  /** Default /dev/kvm (tests point it elsewhere). */
  devKvm?: string;
  /**
   * Tests only: accelerator arguments for the test boot instead of
   * `-accel kvm -cpu host,-arch-capabilities` (lets a TCG host exercise the success path).
   */
  testBootAccelArgs?: string[];
  logger?: EngineLogger;
}

export interface AccelProbeResult {
  accel: Accel;
  reason: string;
  /** True when a test boot proved the answer (or config decided it). */
  verified: boolean;
  source: 'config' | 'probe' | 'cache-file';
  /** Time this answer cost when it was computed. */
  durationMs: number;
  qemuVersion?: string;
}

const memo = new Map<string, Promise<AccelProbeResult>>();

/** Forget memoized answers (tests; or after installing a new QEMU). */
export function resetAccelMemo(): void {
  memo.clear();
}

export function probeAccel(opts: AccelProbeOptions): Promise<AccelProbeResult> {
  const key = JSON.stringify([
    opts.config,
    opts.qemuBinary,
    opts.kernel,
    opts.initrd,
    opts.devKvm,
    opts.testBootAccelArgs,
  ]);
  let p = memo.get(key);
  if (!p) {
    p = runProbe(opts);
    memo.set(key, p);
    // A failed probe (e.g. QEMU missing) should not stick.
    p.catch(() => memo.delete(key));
  }
  return p;
}

/** "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)" from `qemu-system-x86_64 -version`. */
export async function qemuVersion(binary = DEFAULT_QEMU_BINARY): Promise<string> {
  let out: string;
  try {
    out = (await execFileP(binary, ['-version'], { timeout: 10_000 })).stdout;
  } catch (err) {
    throw new EngineError('unsupported', `cannot run ${binary} -version: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const m = /QEMU emulator version (\S+(?: \([^)]*\))?)/.exec(out);
  if (!m?.[1])
    throw new EngineError('unsupported', `unexpected ${binary} -version output: ${out.slice(0, 200)}`);
  return m[1];
}

async function runProbe(opts: AccelProbeOptions): Promise<AccelProbeResult> {
  const t0 = Date.now();
  const log = opts.logger ?? silentLogger;
  const done = (accel: Accel, reason: string, extra: Partial<AccelProbeResult> = {}): AccelProbeResult => {
    const r: AccelProbeResult = {
      accel,
      reason,
      verified: true,
      source: 'probe',
      durationMs: Date.now() - t0,
      ...extra,
    };
    log.info({ accel: r.accel, reason: r.reason, verified: r.verified, ms: r.durationMs }, 'accel probe');
    return r;
  };
  if (opts.config === 'tcg') return done('tcg', 'configured: accel = tcg', { source: 'config' });
  if (opts.config === 'kvm') return done('kvm', 'configured: accel = kvm (not probed)', { source: 'config' });

  const binary = opts.qemuBinary ?? DEFAULT_QEMU_BINARY;
  const version = await qemuVersion(binary);
  const devKvm = opts.devKvm ?? '/dev/kvm';
  try {
    await access(devKvm, constants.R_OK | constants.W_OK);
  } catch (err) {
    const code = (err as { code?: string }).code;
    const why = code === 'ENOENT' ? `${devKvm} does not exist` : `${devKvm} is not read/writable (${code})`;
    return done('tcg', why, { qemuVersion: version });
  }

  const cacheKey = opts.kernel ? await cacheKeyFor(version, opts.kernel) : null;
  if (cacheKey && opts.cacheFile) {
    const hit = await readCache(opts.cacheFile, cacheKey);
    if (hit) return { ...hit, source: 'cache-file' };
  }

  const result = opts.kernel
    ? await testBoot(binary, opts.kernel, opts, log)
    : await weakProbe(binary, opts.timeoutMs ?? 10_000);
  const final = done(result.accel, result.reason, { verified: result.verified, qemuVersion: version });
  if (cacheKey && opts.cacheFile && final.verified) await writeCache(opts.cacheFile, cacheKey, final, log);
  return final;
}

interface Verdict {
  accel: Accel;
  reason: string;
  verified: boolean;
}

/** Boot the kernel under -accel kvm; success = the marker (or kernel progress) on the console. */
async function testBoot(
  binary: string,
  kernel: string,
  opts: AccelProbeOptions,
  log: EngineLogger,
): Promise<Verdict> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const dir = await mkdtemp(join(tmpdir(), 'banger-accel-'));
  try {
    const serial = join(dir, 'serial.log');
    let initrd: string | undefined;
    let markers: string[];
    const busybox = await readFile(opts.busybox ?? '/bin/busybox').catch(() => null);
    if (busybox) {
      initrd = join(dir, 'probe.cpio');
      const init = `#!/bin/busybox sh\n/bin/busybox echo ${PROBE_MARKER}\n/bin/busybox poweroff -f\n`;
      await writeFile(initrd, busyboxInitramfs(busybox, init));
      markers = [PROBE_MARKER];
    } else if (opts.initrd) {
      initrd = opts.initrd;
      markers = ['Run /init as init process'];
    } else {
      // No userspace at all: reaching the root-mount panic means the whole kernel init ran.
      markers = ['VFS: Unable to mount root fs', 'Run /init as init process'];
    }
    const argv = [
      '-M', 'microvm', ...(opts.testBootAccelArgs ?? ['-accel', 'kvm', '-cpu', 'host,-arch-capabilities']),
      '-m', '256', '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', `file:${serial}`,
      '-kernel', kernel, ...(initrd ? ['-initrd', initrd] : []),
      '-append', `console=ttyS0 panic=-1 loglevel=7${opts.testBootAccelArgs ? tscParams() : ''}`, '-no-reboot',
    ]; // prettier-ignore
    const child = spawnBounded(binary, argv, timeoutMs + 5_000);
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      if (stderr.length < 4096) stderr += c.toString('utf8');
    });
    const proc: { exit: { code: number | null; signal: string | null } | null } = { exit: null };
    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        proc.exit = { code, signal };
        resolve();
      });
      child.once('error', (err) => {
        stderr += String(err);
        proc.exit = { code: -1, signal: null };
        resolve();
      });
    });
    const t0 = Date.now();
    let serialText = '';
    let verdict: Verdict | null = null;
    while (!verdict) {
      await sleep(100);
      serialText = await readFile(serial, 'utf8').catch(() => '');
      const elapsed = ((Date.now() - t0) / 1000).toFixed(1);
      if (markers.some((m) => serialText.includes(m))) {
        verdict = {
          accel: 'kvm',
          reason: `test boot under KVM reached userspace in ${elapsed} s`,
          verified: true,
        };
      } else if (proc.exit) {
        const err = lastLine(stderr) || lastLine(serialText) || `exit code ${String(proc.exit.code)}`;
        verdict = {
          accel: 'tcg',
          reason: `test boot under KVM failed after ${elapsed} s: ${err}`,
          verified: true,
        };
      } else if (Date.now() - t0 > timeoutMs) {
        const last = lastLine(serialText);
        verdict = {
          accel: 'tcg',
          reason:
            `test boot under KVM made no progress in ${timeoutMs / 1000} s` +
            (last ? ` (console stuck at "${last}")` : '') +
            ((await hasHwVirtFlags()) ? '' : '; host CPU shows no vmx/svm (paravirtual KVM such as PVM?)'),
          verified: true,
        };
      }
    }
    if (!proc.exit) child.kill('SIGTERM');
    await exited;
    log.debug({ verdict, serial: serialText.slice(-500) }, 'accel test boot');
    return verdict;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Without a kernel: check QEMU can open KVM and keep a microvm alive for a moment. This cannot
 * tell a PVM host from real KVM, so the answer stays TCG and unverified; probe again with a
 * kernel.
 */
async function weakProbe(binary: string, timeoutMs: number): Promise<Verdict> {
  const argv = ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host,-arch-capabilities', '-m', '64',
    '-nodefaults', '-no-user-config', '-display', 'none', '-S']; // prettier-ignore
  const child = spawnBounded(binary, argv, timeoutMs + 5_000);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<boolean>((r) => {
    child.once('exit', () => r(true));
    child.once('error', () => r(true));
  });
  const died = await Promise.race([exited, sleep(Math.min(1_500, timeoutMs)).then(() => false)]);
  if (!died) {
    child.kill('SIGTERM');
    await exited;
    return {
      accel: 'tcg',
      reason:
        'QEMU starts under KVM, but no kernel was given to verify a guest boots (PVM-style hosts pass this check); using TCG until probed with a kernel',
      verified: false,
    };
  }
  return {
    accel: 'tcg',
    reason: `QEMU cannot start under KVM: ${lastLine(stderr) || 'exited'}`,
    verified: true,
  };
}

/**
 * Spawn a probe QEMU under coreutils `timeout` when available, so it cannot outlive its limit
 * even if this process dies mid-probe (a stuck PVM boot burns a full core). SIGTERM on the
 * returned child is forwarded to QEMU, which exits on it.
 */
function spawnBounded(
  binary: string,
  argv: string[],
  limitMs: number,
): ChildProcessByStdio<null, null, Readable> {
  const stdio: ['ignore', 'ignore', 'pipe'] = ['ignore', 'ignore', 'pipe'];
  if (existsSync('/usr/bin/timeout')) {
    const secs = String(Math.ceil(limitMs / 1000));
    return spawn('/usr/bin/timeout', ['-s', 'KILL', secs, binary, ...argv], { stdio });
  }
  return spawn(binary, argv, { stdio });
}

function tscParams(): string {
  const khz = hostTscKhz();
  return khz === null ? '' : ` tsc_early_khz=${khz} tsc=reliable`;
}

function lastLine(text: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  return (lines.at(-1) ?? '').slice(0, 300);
}

async function hasHwVirtFlags(): Promise<boolean> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  return /^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo);
}

async function cacheKeyFor(version: string, kernel: string): Promise<string | null> {
  try {
    const st = await stat(kernel);
    return JSON.stringify({
      qemu: version,
      kernel,
      size: st.size,
      mtimeMs: Math.round(st.mtimeMs),
      host: release(),
    });
  } catch {
    return null;
  }
}

type CacheFile = Record<string, Omit<AccelProbeResult, 'source'>>;

async function readCache(file: string, key: string): Promise<AccelProbeResult | null> {
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as CacheFile;
    const hit = parsed[key];
    if (hit && (hit.accel === 'kvm' || hit.accel === 'tcg') && typeof hit.reason === 'string') {
      return { ...hit, source: 'cache-file' };
    }
  } catch {
    // missing or unreadable: probe again
  }
  return null;
}

async function writeCache(file: string, key: string, r: AccelProbeResult, log: EngineLogger): Promise<void> {
  const old = await readFile(file, 'utf8')
    .then((t) => JSON.parse(t) as unknown)
    .catch(() => null);
  // Anything unreadable or not a plain object is replaced, not merged.
  const data: CacheFile =
    typeof old === 'object' && old !== null && !Array.isArray(old) ? (old as CacheFile) : {};
  const { source: _source, ...rest } = r;
  data[key] = rest;
  try {
    await writeFileAtomic(file, JSON.stringify(data, null, 2) + '\n');
  } catch (err) {
    log.warn({ err, file }, 'accel probe: cannot write cache file');
  }
}
