// Validation of a VmLaunchSpec, shared by every driver's pure `prepare`. Everything a VMM would
// reject late (or worse, misread) is rejected here with a precise message.
import { isAbsolute } from 'node:path';
import type { VmLaunchSpec } from './driver.ts';
import { EngineError } from './errors.ts';

/** sun_path is 108 bytes including the terminating NUL. */
export const MAX_UNIX_SOCKET_PATH = 107;

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

function invalid(message: string, details: Record<string, unknown> = {}): EngineError {
  return new EngineError('invalid_spec', message, { details });
}

export function isValidMac(mac: string): boolean {
  // Unicast (I/G bit clear) so the guest NIC can actually own it.
  return MAC_RE.test(mac) && (parseInt(mac.slice(0, 2), 16) & 1) === 0;
}

export function isValidIpv4Cidr(cidr: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (!m) return false;
  const octets = m.slice(1, 5).map(Number);
  const prefix = Number(m[5]);
  return octets.every((o) => o <= 255) && prefix >= 8 && prefix <= 30;
}

export function checkPath(what: string, p: string): void {
  if (typeof p !== 'string' || p.length === 0) throw invalid(`${what} is empty`);
  if (!isAbsolute(p)) throw invalid(`${what} must be an absolute path: ${p}`, { path: p });
  if (/[\0\n\r]/.test(p)) throw invalid(`${what} contains a NUL or newline`, { path: p });
}

export function checkSocketPath(what: string, p: string): void {
  checkPath(what, p);
  const len = Buffer.byteLength(p);
  if (len > MAX_UNIX_SOCKET_PATH) {
    throw invalid(`${what} is ${len} bytes; unix socket paths are limited to ${MAX_UNIX_SOCKET_PATH}: ${p}`, {
      path: p,
    });
  }
}

/**
 * QEMU runs a guestfwd command through a shell-like parser, and socat parses its address: the
 * socket path may hold only characters neither gives a meaning to (no spaces, quotes, `:`, `,`).
 */
const GUESTFWD_SOCKET_RE = /^\/[A-Za-z0-9._/-]+$/;
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function checkGuestForward(g: { ip: string; port: number; unixSocket: string; relay?: string }): void {
  if (g.relay !== undefined && (typeof g.relay !== 'string' || !GUESTFWD_SOCKET_RE.test(g.relay)))
    throw invalid(`net.guestfwd.relay must be an absolute path of [A-Za-z0-9._/-]: ${String(g.relay)}`);
  if (typeof g.ip !== 'string' || !IPV4_RE.test(g.ip)) throw invalid(`net.guestfwd.ip is not IPv4: ${g.ip}`);
  checkInt('net.guestfwd.port', g.port, 1, 65535);
  checkSocketPath('net.guestfwd.unixSocket', g.unixSocket);
  if (!GUESTFWD_SOCKET_RE.test(g.unixSocket))
    throw invalid(`net.guestfwd.unixSocket may hold only [A-Za-z0-9._/-]: ${g.unixSocket}`, {
      path: g.unixSocket,
    });
}

function checkInt(what: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max)
    throw invalid(`${what} must be an integer in [${min}, ${max}]`);
}

/** Checks common to all drivers; driver-specific limits are checked by the driver. */
export function validateLaunchSpec(spec: VmLaunchSpec): void {
  if (!ID_RE.test(spec.id)) throw invalid(`bad VM id ${JSON.stringify(spec.id)}`);
  checkPath('vmDir', spec.vmDir);
  checkPath('kernel', spec.kernel);
  if (spec.initrd !== undefined) checkPath('initrd', spec.initrd);
  checkPath('serialLog', spec.serialLog);
  if (spec.agentSocket !== undefined) checkSocketPath('agentSocket', spec.agentSocket);
  if (spec.qgaSocket !== undefined) checkSocketPath('qgaSocket', spec.qgaSocket);
  if (/[\0\n\r]/.test(spec.cmdline)) throw invalid('cmdline contains a NUL or newline');
  checkInt('vcpus', spec.vcpus, 1, 64);
  checkInt('memoryMiB', spec.memoryMiB, 32, 1 << 20);
  if (spec.accel !== 'kvm' && spec.accel !== 'tcg') throw invalid(`bad accel ${String(spec.accel)}`);
  if (spec.tbSizeMiB !== undefined) checkInt('tbSizeMiB', spec.tbSizeMiB, 1, 4096);
  if (spec.tscKhz !== undefined) checkInt('tscKhz', spec.tscKhz, 1000, 100_000_000);
  if (spec.incoming !== undefined && (spec.incoming.length === 0 || /[\0\n\r]/.test(spec.incoming))) {
    throw invalid('incoming must be a non-empty single-line URI');
  }
  spec.disks.forEach((d, i) => {
    checkPath(`disks[${i}].path`, d.path);
    if (d.format !== 'qcow2' && d.format !== 'raw') throw invalid(`disks[${i}].format must be qcow2 or raw`);
  });
  const net = spec.net;
  switch (net.mode) {
    case 'user':
      checkInt('net.sshHostPort', net.sshHostPort, 1, 65535);
      if (net.guestCidr !== undefined && !isValidIpv4Cidr(net.guestCidr)) {
        throw invalid(`net.guestCidr is not an IPv4 CIDR (/8../30): ${net.guestCidr}`);
      }
      if (net.mac !== undefined && !isValidMac(net.mac))
        throw invalid(`net.mac is not a unicast MAC: ${net.mac}`);
      if (net.guestfwd !== undefined) checkGuestForward(net.guestfwd);
      break;
    case 'tap':
      if (!IFNAME_RE.test(net.tap))
        throw invalid(`net.tap is not an interface name: ${JSON.stringify(net.tap)}`);
      if (!isValidMac(net.mac)) throw invalid(`net.mac is not a unicast MAC: ${net.mac}`);
      break;
    case 'none':
      break;
    default:
      throw invalid(`bad net mode ${String((net as { mode: unknown }).mode)}`);
  }
}

/**
 * Append `key=value` params whose key the command line does not already set. Existing values
 * win: the caller's explicit choice beats the builder's default.
 */
export function withKernelParams(cmdline: string, params: [key: string, value: string | null][]): string {
  const words = cmdline.split(/\s+/).filter((w) => w.length > 0);
  const has = (key: string): boolean => words.some((w) => w === key || w.startsWith(`${key}=`));
  for (const [key, value] of params) {
    if (!has(key)) words.push(value === null ? key : `${key}=${value}`);
  }
  return words.join(' ');
}
