// Warm start, host side: a VM restored from a saved state is a copy of its template down to the
// machine-id, hostname, ssh host key and kernel RNG state. Right after `cont`, reidentifyGuest
// goes through the guest agent: it syncs the stream, sets the guest clock (it stood still while
// the state was saved), then runs guest/bin/banger-reidentify with this VM's identity on stdin.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isEngineError } from '../engine/errors.ts';
import type { QgaClient } from '../engine/qga.ts';
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
}

export interface ReidentifyResult {
  durationMs: number;
  /** banger-reidentify's summary line, e.g. `banger-reidentify: ok machine-id hostname ...`. */
  summary: string;
  /** How the guest clock was set: guest-set-time, or date(1) where the agent would not. */
  clock: 'guest-set-time' | 'date';
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
  const lines = [
    `machine_id=${o.machineId}`,
    `hostname=${o.hostname}`,
    `host_key=${Buffer.from(o.hostKeyPrivate.endsWith('\n') ? o.hostKeyPrivate : `${o.hostKeyPrivate}\n`).toString('base64')}`,
    `host_key_pub=${Buffer.from(`${pub}\n`).toString('base64')}`,
    `entropy=${entropy.toString('base64')}`,
  ];
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

/** `date -u -s @S.NNNNNNNNN` arguments for a time in ns since the epoch. */
export function dateArgs(ns: bigint): string[] {
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0');
  return ['-u', '-s', `@${ns / 1_000_000_000n}.${frac}`];
}

/**
 * Give a freshly restored guest its own identity. Validates everything before the first byte
 * goes to the guest; throws ReidentifyError when the script fails, EngineError when the agent
 * does (timeout, closed, error reply).
 */
export async function reidentifyGuest(
  qga: Pick<QgaClient, 'sync' | 'setTime' | 'exec'>,
  o: ReidentifyOptions,
  opts: { timeoutMs: number; guestDir?: string },
): Promise<ReidentifyResult> {
  const t0 = Date.now();
  const deadline = t0 + opts.timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  const input = reidentifyInput(o);
  const script = reidentifyScript(opts.guestDir);

  await qga.sync(left());
  let clock: ReidentifyResult['clock'] = 'guest-set-time';
  try {
    await qga.setTime(BigInt(Date.now()) * 1_000_000n, left());
  } catch (err) {
    // qemu-ga before 9.0 refuses guest-set-time when /sbin/hwclock is missing (Debian 12 ships
    // it in util-linux-extra) and fails it when `hwclock -w` fails (the clock is set by then).
    if (!isEngineError(err, 'guest_agent')) throw err;
    const r = await qga.exec('/bin/date', dateArgs(BigInt(Date.now()) * 1_000_000n), { timeoutMs: left() });
    if (r.exitcode !== 0) {
      throw new Error(
        `cannot set the guest clock: ${err.message}; date: ${r.stderr.trim() || `exit ${r.exitcode}`}`,
        {
          cause: err,
        },
      );
    }
    clock = 'date';
  }

  const r = await qga.exec('/bin/sh', ['-c', script, 'banger-reidentify'], {
    inputData: Buffer.from(input),
    timeoutMs: left(),
  });
  if (r.exitcode !== 0) throw new ReidentifyError(r.exitcode, r.stderr, r.signal);
  const lines = r.stdout.trim().split('\n');
  return { durationMs: Date.now() - t0, summary: lines[lines.length - 1] ?? '', clock };
}
