// Warm start, host side: a VM restored from a saved state is a copy of its template down to the
// machine-id, hostname, ssh host key and kernel RNG state. Right after `cont`, reidentifyGuest
// goes through the guest agent: it syncs the stream, then runs guest/bin/banger-reidentify with
// this VM's identity on stdin, the clock first (it stood still while the state was saved).
// A warm template saves the script already running (startReidentifyWaiter): a clone of it only
// writes the input to that waiting process, which spares the agent's fork and exec of a shell
// and the shell's parse of the script, ≈0.15 s of a clone's start under TCG. A fork's children,
// saved from a running VM, have no waiter: the agent runs the script for them.
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  watch,
  type FSWatcher,
} from 'node:fs';
import { join } from 'node:path';
import { isEngineError } from '../engine/errors.ts';
import type { QgaClient, QgaExecResult } from '../engine/qga.ts';
import { isValidIpv4Cidr, isValidMac } from '../engine/spec.ts';
import { findGuestDir } from '../image/recipe.ts';
import { validateHostname, validateMachineId } from '../image/seed.ts';

/** The script, relative to the guest/ directory. */
export const REIDENTIFY_SCRIPT = 'bin/banger-reidentify';
/** What banger-reidentify reads on stdin as entropy: at least / at most this many bytes. */
export const ENTROPY_MIN_BYTES = 32;
export const ENTROPY_MAX_BYTES = 512;

export interface ReidentifyNet {
  /** The clone's own MAC (bridged clones would otherwise share the template's). */
  mac: string;
  /** a.b.c.d/prefix */
  address: string;
  gateway: string;
  /** Written as /etc/resolv.conf when given. */
  nameservers?: string[];
}

export interface ReidentifyOptions {
  machineId: string;
  hostname: string;
  hostKeyPrivate: string;
  /** `ssh-ed25519 AAAA... [comment]` */
  hostKeyPublic: string;
  /** Mixed into the guest's kernel RNG. Default: 64 fresh random bytes. */
  entropy?: Buffer;
  /** Bridged networking: the guest's NIC is reconfigured. */
  net?: ReidentifyNet;
  /** Set the guest's clock to this (ns since the epoch) first; reidentifyGuest fills it in. */
  clockNs?: bigint;
  /**
   * 32 lowercase hex: a waiter writes readyLine(token) on the serial console once an SSH login
   * may start (host key, address and RNG in place), before the rest of its work.
   */
  readyToken?: string;
}

/** A template's waiting banger-reidentify (startReidentifyWaiter): its pid in the guest. */
export interface ReidentifyWaiter {
  pid: number;
}

/** Where a template's waiter makes its FIFO; unlinked once open (clones write /proc/PID/fd/0). */
export const WAITER_FIFO = '/run/banger-reidentify.fifo';
/** Ends a waiter's input (it holds a writer of its FIFO itself: no EOF comes). */
const WAITER_END = 'end\n';

export interface ReidentifyResult {
  durationMs: number;
  /** banger-reidentify's summary line, e.g. `banger-reidentify: ok machine-id hostname ...`. */
  summary: string;
}

/** banger-reidentify exited non-zero; `stderr` says why. */
export class ReidentifyError extends Error {
  readonly exitcode: number | null;
  readonly stderr: string;

  constructor(exitcode: number | null, stderr: string, signal?: number) {
    const why = stderr.trim() || (signal !== undefined ? `killed by signal ${signal}` : 'no message');
    super(`banger-reidentify failed (exit ${exitcode ?? 'none'}): ${why}`);
    this.name = 'ReidentifyError';
    this.exitcode = exitcode;
    this.stderr = stderr;
  }
}

const PRIVATE_KEY_RE =
  /^-----BEGIN OPENSSH PRIVATE KEY-----\n(?:[A-Za-z0-9+/=]+\n)+-----END OPENSSH PRIVATE KEY-----\n?$/;
// Key type "ssh-ed25519" is always the same first bytes of the blob; the comment is printable ASCII.
const ED25519_PUBLIC_RE = /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5[A-Za-z0-9+/]+={0,2}(?: [\x20-\x7e]*)?$/;
const NAMESERVER_RE = /^[0-9a-fA-F.:]+$/;

function ipv4ToInt(a: string): number {
  return a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

/** a.b.c.d as banger and the guest script accept it: no prefix, no leading zeros. */
function isPlainIpv4(a: string): boolean {
  return !a.includes('/') && isValidIpv4Cidr(`${a}/24`) && !/(^|\.)0\d/.test(a);
}

function checkNet(net: ReidentifyNet): { mac: string } {
  const mac = net.mac.toLowerCase();
  if (!isValidMac(mac)) throw new Error(`reidentify: invalid MAC ${JSON.stringify(net.mac)}`);
  const [addr = '', prefixText = ''] = net.address.split('/');
  if (!isValidIpv4Cidr(net.address) || !isPlainIpv4(addr)) {
    throw new Error(`reidentify: invalid address ${JSON.stringify(net.address)} (want a.b.c.d/8..30)`);
  }
  if (!isPlainIpv4(net.gateway))
    throw new Error(`reidentify: invalid gateway ${JSON.stringify(net.gateway)}`);
  const prefix = Number(prefixText);
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  if ((ipv4ToInt(addr) & mask) >>> 0 !== (ipv4ToInt(net.gateway) & mask) >>> 0 || addr === net.gateway) {
    throw new Error(`reidentify: gateway ${net.gateway} is not another address in ${net.address}`);
  }
  for (const ns of net.nameservers ?? []) {
    if (!NAMESERVER_RE.test(ns)) throw new Error(`reidentify: invalid nameserver ${JSON.stringify(ns)}`);
  }
  return { mac };
}

/** banger-reidentify's stdin: `key=value` lines, every value checked here first. Pure. */
export function reidentifyInput(o: ReidentifyOptions): string {
  validateMachineId(o.machineId);
  validateHostname(o.hostname);
  if (!PRIVATE_KEY_RE.test(o.hostKeyPrivate)) {
    throw new Error('reidentify: hostKeyPrivate is not an OpenSSH private key');
  }
  const pub = o.hostKeyPublic.trim();
  if (!ED25519_PUBLIC_RE.test(pub)) throw new Error('reidentify: hostKeyPublic must be one ssh-ed25519 key');
  const entropy = o.entropy ?? randomBytes(64);
  if (entropy.length < ENTROPY_MIN_BYTES || entropy.length > ENTROPY_MAX_BYTES) {
    throw new Error(`reidentify: entropy must be ${ENTROPY_MIN_BYTES} to ${ENTROPY_MAX_BYTES} bytes`);
  }
  const keyText = o.hostKeyPrivate.endsWith('\n') ? o.hostKeyPrivate.slice(0, -1) : o.hostKeyPrivate;
  const lines = [
    `machine_id=${o.machineId}`,
    `hostname=${o.hostname}`,
    // The PEM block's lines joined with ',' (never in PEM): the script splits them with builtins.
    `host_key=${keyText.split('\n').join(',')}`,
    `host_key_pub=${pub}`,
    `entropy=${entropy.toString('hex')}`,
  ];
  if (o.clockNs !== undefined) lines.push(`clock=${clockArg(o.clockNs)}`);
  if (o.readyToken !== undefined) {
    if (!/^[0-9a-f]{32}$/.test(o.readyToken) || /^0+$/.test(o.readyToken)) {
      throw new Error('reidentify: readyToken must be 32 lowercase hex digits, not all zero');
    }
    lines.push(`ready_token=${o.readyToken}`);
  }
  if (o.net) {
    const { mac } = checkNet(o.net);
    lines.push(`mac=${mac}`, `address=${o.net.address}`, `gateway=${o.net.gateway}`);
    if (o.net.nameservers && o.net.nameservers.length > 0) {
      lines.push(`nameservers=${o.net.nameservers.join(',')}`);
    }
  }
  return lines.join('\n') + '\n';
}

let scriptCache: { path: string; text: string } | undefined;

/** The text of guest/bin/banger-reidentify (read once per guest/ directory). */
export function reidentifyScript(guestDir: string = findGuestDir()): string {
  const path = join(guestDir, REIDENTIFY_SCRIPT);
  if (scriptCache?.path !== path) scriptCache = { path, text: readFileSync(path, 'utf8') };
  return scriptCache.text;
}

/** `S.NNNNNNNNN` for a time in ns since the epoch (the script's `clock`, for `date -s @...`). */
export function clockArg(ns: bigint): string {
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0');
  return `${ns / 1_000_000_000n}.${frac}`;
}

/**
 * Give a freshly restored guest its own identity. Validates everything before the first byte
 * goes to the guest; throws ReidentifyError when the script fails, EngineError when the agent
 * does (timeout, closed, error reply). With `waiter` (a warm template's), the input goes to that
 * waiting script if the agent says it still waits (waiterWaits); otherwise the agent runs the script. The summary ends with where the time went.
 */
export async function reidentifyGuest(
  qga: Pick<QgaClient, 'sync' | 'exec' | 'writeFile' | 'waitExec' | 'execStatus'>,
  o: ReidentifyOptions,
  opts: {
    timeoutMs: number;
    guestDir?: string;
    waiter?: ReidentifyWaiter;
    /** How long to wait between the agent's exit-status polls (asked before each). Default 10 ms. */
    pollMs?: () => number;
  },
): Promise<ReidentifyResult> {
  const t0 = performance.now();
  const deadline = Date.now() + opts.timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  reidentifyInput(o); // everything checked before the guest is touched
  const ms = (from: number): number => Math.round(performance.now() - from);

  await qga.sync(left());
  const syncMs = ms(t0);
  const parts = [`agent sync ${syncMs} ms`];
  let waiter = opts.waiter;
  if (waiter && !(await waiterWaits(qga, waiter, left()))) {
    // Gone (it died before the template was saved, or the agent lost it): nothing was written
    // yet, so the agent runs the script. Never written to: another process may have its pid now.
    parts.push(`waiter ${waiter.pid} gone`);
    waiter = undefined;
  }
  // The clock is set by the script, first, from a time read just before it runs: the agent's
  // guest-set-time would also write the RTC (`hwclock -w`, which waits for the next second
  // boundary: ~0.9 s of the clone's start here), and Debian 12's qemu-ga refuses it outright
  // where /sbin/hwclock is missing. A clone only needs the system clock.
  const t2 = performance.now();
  const input = reidentifyInput({ ...o, clockNs: BigInt(Date.now()) * 1_000_000n });
  let r: QgaExecResult | undefined;
  if (waiter) {
    const { pid } = waiter;
    const written = await qga
      .writeFile(`/proc/${pid}/fd/0`, Buffer.from(input + WAITER_END), { timeoutMs: left() })
      .then(
        () => true,
        (err: unknown) => {
          // Its stdin refused at the open: nothing written, the agent runs the script instead.
          if (isEngineError(err, 'guest_agent') && err.details['opened'] === false) return false;
          throw err;
        },
      );
    if (written) {
      parts.push(`input written ${ms(t2)} ms`);
      r = await qga.waitExec(pid, {
        timeoutMs: left(),
        pollMs: opts.pollMs ?? 10,
        name: 'banger-reidentify (waiting)',
      });
    } else parts.push(`waiter ${pid} refused its input`);
  }
  if (!r) {
    const script = reidentifyScript(opts.guestDir);
    let spawnedMs: number | undefined;
    r = await qga.exec('/bin/sh', ['-c', script, 'banger-reidentify'], {
      inputData: Buffer.from(input),
      timeoutMs: left(),
      pollMs: opts.pollMs ?? 10,
      onSpawned: () => (spawnedMs = ms(t2)),
    });
    if (spawnedMs !== undefined) parts.push(`exec reply ${spawnedMs} ms`);
  }
  if (r.exitcode !== 0) throw new ReidentifyError(r.exitcode, r.stderr, r.signal);
  const lines = r.stdout.trim().split('\n');
  const stages = guestStages(lines.find((l) => l.startsWith('banger-reidentify: times:')));
  parts.push(`script ${ms(t2)} ms${stages ? `: ${stages}` : ''}`);
  const summary = `${lines[lines.length - 1] ?? ''} (${parts.join(', ')})`;
  return { durationMs: ms(t0), summary };
}

/**
 * Whether a template's waiter still waits: guest-exec-status says it runs (the agent's own child,
 * not reaped yet: the pid is still that process). Exited, or a pid the agent does not know: no.
 * Other agent failures (a timeout) are thrown.
 */
export async function waiterWaits(
  qga: Pick<QgaClient, 'execStatus'>,
  waiter: ReidentifyWaiter,
  timeoutMs: number,
): Promise<boolean> {
  try {
    return (await qga.execStatus(waiter.pid, { timeoutMs })) === undefined;
  } catch (err) {
    if (isEngineError(err, 'guest_agent')) return false;
    throw err;
  }
}

/**
 * Start banger-reidentify waiting for its input (the script's `--wait`) in a VM about to be saved
 * as a warm template, and return once it waits: its stdin is the FIFO, whose name is gone. The
 * agent keeps the process in its table, so guest-exec-status answers for it in every clone.
 */
export async function startReidentifyWaiter(
  qga: Pick<QgaClient, 'spawn' | 'exec' | 'waitExec'>,
  opts: { timeoutMs: number; guestDir?: string; fifo?: string },
): Promise<ReidentifyWaiter> {
  const deadline = Date.now() + opts.timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  const script = reidentifyScript(opts.guestDir);
  const fifo = opts.fifo ?? WAITER_FIFO;
  const pid = await qga.spawn('/bin/sh', ['-c', script, 'banger-reidentify', '--wait', fifo], {
    timeoutMs: left(),
  });
  // Waiting: its stdin is a FIFO (it was the agent's /dev/null) and the FIFO's name is unlinked.
  // No fd 0 at all: it exited (a zombie has none).
  const seconds = Math.max(1, Math.floor(left() / 1000));
  const check = await qga.exec(
    '/bin/sh',
    [
      '-c',
      'i=0; until [ -p "/proc/$1/fd/0" ] && [ ! -e "$2" ]; do [ -e "/proc/$1/fd/0" ] || exit 1; i=$((i + 1)); [ $i -le $(($3 * 20)) ] || exit 1; sleep 0.05; done',
      'banger-waiter-check',
      String(pid),
      fifo,
      String(seconds),
    ],
    { timeoutMs: left() },
  );
  if (check.exitcode !== 0) {
    // Exited (the agent may not have seen it yet), or still running but not waiting.
    const st = await qga.waitExec(pid, { timeoutMs: Math.min(2_000, left()) }).catch(() => undefined);
    const why = st ? `it exited ${st.exitcode ?? 'by a signal'}: ${st.stderr.trim()}` : 'it is not waiting';
    throw new Error(`banger-reidentify --wait did not start waiting (${why})`);
  }
  return { pid };
}

/**
 * The script's `times:` line (stage@guest-uptime pairs) as durations between stages, each named
 * by the stage it ends, then the script's own total from its first mark (`begin`: the shell
 * started; `checked`: its input read and checked), e.g. `checked 40 ms, clock 20 ms, rng 0 ms,
 * files 30 ms; in the guest 90 ms`; undefined when absent or malformed.
 */
export function guestStages(line: string | undefined): string | undefined {
  if (!line) return undefined;
  const pairs = [...line.matchAll(/(\w+)@(\d+(?:\.\d+)?)/g)].map((m) => [m[1]!, Number(m[2])] as const);
  if (pairs.length < 2) return undefined;
  const out: string[] = [];
  for (let i = 1; i < pairs.length; i++) {
    out.push(`${pairs[i]![0]} ${Math.round((pairs[i]![1] - pairs[i - 1]![1]) * 1000)} ms`);
  }
  const total = Math.round((pairs[pairs.length - 1]![1] - pairs[0]![1]) * 1000);
  return `${out.join(', ')}; in the guest ${total} ms`;
}

/** What a waiter writes on the serial console once an SSH login may start (ready_token). */
export function readyLine(token: string): string {
  return `banger-reidentify ready ${token}`;
}

/** A fresh ready token: 128 random bits as 32 lowercase hex digits (never all zero). */
export function newReadyToken(): string {
  for (;;) {
    const t = randomBytes(16).toString('hex');
    if (!/^0+$/.test(t)) return t;
  }
}

/**
 * Watch a file that only grows (a VM's serial log, QEMU appends to it) for `needle` in what is
 * appended from now on: inotify through fs.watch, and a read every `pollMs` in case an event is
 * missed. `seen` resolves once it appears (never rejects); stop() ends the watch. Guest-written
 * text: the needle carries a token only the host and the clone's re-identification know.
 */
export function watchFileFor(
  path: string,
  needle: string,
  pollMs = 50,
): { seen: Promise<void>; stop: () => void } {
  let offset = 0;
  try {
    offset = statSync(path).size;
  } catch {
    // not there yet: everything it will hold is new
  }
  let tail = '';
  let stopped = false;
  let found!: () => void;
  const seen = new Promise<void>((resolve) => (found = resolve));
  let watcher: FSWatcher | undefined;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    watcher?.close();
  };
  const check = (): void => {
    if (stopped) return;
    let fd: number | undefined;
    try {
      fd = openSync(path, 'r');
      const size = fstatSync(fd).size;
      const buf = Buffer.alloc(64 * 1024);
      while (offset < size) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, size - offset), offset);
        if (n <= 0) break;
        offset += n;
        const text = tail + buf.subarray(0, n).toString('latin1');
        if (text.includes(needle)) {
          stop();
          found();
          return;
        }
        tail = text.slice(-(needle.length - 1));
      }
    } catch {
      // not there yet, or gone: the next event or tick looks again
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  };
  const timer = setInterval(check, pollMs);
  try {
    watcher = watch(path, { persistent: false }, check);
    watcher.on('error', () => undefined);
  } catch {
    // no inotify for it: the timer alone
  }
  check();
  return { seen, stop };
}
