// bangerd configuration: a TOML file, every key optional, validated strictly so a typo is an
// error at start-up rather than a silently ignored setting.
import { existsSync, readFileSync } from 'node:fs';
import { parse } from 'smol-toml';
import { EgressRuleError, parseEgress } from '../egress/rules.ts';
import { parseLogsConfig, type LogsConfig } from '../ops/config.ts';
import { parseEgressConfig, type EgressConfig } from '../egress/config.ts';
import { IdleDurationError, parseIdleDuration } from '../vm/idle.ts';

export interface DaemonConfig {
  log_level: string;
  accel: 'auto' | 'kvm' | 'tcg';
  /** The VMM: qemu (default) or firecracker (needs its binary and KVM; else QEMU runs, said why). */
  engine: 'qemu' | 'firecracker';
  network: 'auto' | 'user' | 'bridge';
  helper_socket: string | undefined;
  image_cache_dir: string | undefined;
  /** Bridge mode: banger's bridge (br-banger or that prefix plus up to six [a-z0-9-]). */
  bridge_name: string;
  /** Bridge mode: the guests' subnet; the bridge takes its first host address. */
  bridge_cidr: string;
  /** The `.vm` DNS server's port on 127.0.0.1 (and the bridge address); 0 turns it off. */
  dns_port: number;
  /**
   * `egress`: the policy of a VM created without --egress (src/egress/rules.ts syntax; `all`).
   * `idle_pause_after_ms`: from `idle_pause_after = "30m"` (src/vm/idle.ts; absent or 0: off).
   */
  vm_defaults: {
    vcpus: number;
    memory_mib: number;
    disk_size: string;
    egress: string;
    idle_pause_after_ms?: number;
  };
  /** [warm]: auto = warm a spec's template in the background after its first cold create. */
  warm: { auto: boolean };
  /** [logs]: where `banger op trace` reads logs back, op record retention (defaults when absent). */
  logs?: LogsConfig;
  /**
   * [images] apt_sources: apt source lines (`\n`-separated) that replace an image's own while it
   * is made bootable or a derived image installs packages (src/image/prepare-script.ts).
   */
  images: { apt_sources?: string };
  /** [egress]: the egress proxy (src/egress/config.ts); defaults when absent. */
  egress?: EgressConfig;
}

export const DEFAULT_CONFIG: DaemonConfig = {
  log_level: 'info',
  accel: 'auto',
  engine: 'qemu',
  network: 'auto',
  helper_socket: undefined,
  image_cache_dir: undefined,
  bridge_name: 'br-banger',
  bridge_cidr: '10.213.0.0/24',
  dns_port: 5354,
  vm_defaults: { vcpus: 2, memory_mib: 1024, disk_size: '4G', egress: 'all' },
  warm: { auto: false },
  images: {},
};

const TOP_KEYS = new Set([
  'log_level',
  'accel',
  'engine',
  'network',
  'helper_socket',
  'image_cache_dir',
  'vm_defaults',
  'warm',
  'logs',
  'images',
  'bridge_name',
  'bridge_cidr',
  'dns_port',
  'egress',
]);
const VM_KEYS = new Set(['vcpus', 'memory_mib', 'disk_size', 'egress', 'idle_pause_after']);

function oneOf<T extends string>(v: unknown, allowed: readonly T[], key: string): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new Error(`config: ${key} must be one of ${allowed.join(', ')}`);
  }
  return v as T;
}

function parseImagesConfig(v: unknown, source: string): DaemonConfig['images'] {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`${source}: images must be a table`);
  const t = v as Record<string, unknown>;
  for (const k of Object.keys(t))
    if (k !== 'apt_sources') throw new Error(`${source}: unknown key "images.${k}"`);
  if (t.apt_sources === undefined) return {};
  const s = t.apt_sources;
  const lines = typeof s === 'string' ? s.split('\n').filter((l) => l.trim() !== '') : [];
  if (lines.length === 0 || !lines.every((l) => /^\s*deb(-src)?\s/.test(l)))
    throw new Error(`${source}: images.apt_sources must be one or more "deb ..." lines`);
  return { apt_sources: s as string };
}

export function parseConfig(text: string, source = 'config'): DaemonConfig {
  let raw: Record<string, unknown>;
  try {
    raw = parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${source}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  for (const k of Object.keys(raw)) if (!TOP_KEYS.has(k)) throw new Error(`${source}: unknown key "${k}"`);
  const c: DaemonConfig = {
    ...DEFAULT_CONFIG,
    vm_defaults: { ...DEFAULT_CONFIG.vm_defaults },
    warm: { ...DEFAULT_CONFIG.warm },
    images: {},
  };
  if (raw.log_level !== undefined)
    c.log_level = oneOf(raw.log_level, ['trace', 'debug', 'info', 'warn', 'error'], 'log_level');
  if (raw.accel !== undefined) c.accel = oneOf(raw.accel, ['auto', 'kvm', 'tcg'], 'accel');
  if (raw.engine !== undefined) c.engine = oneOf(raw.engine, ['qemu', 'firecracker'], 'engine');
  if (raw.network !== undefined) c.network = oneOf(raw.network, ['auto', 'user', 'bridge'], 'network');
  for (const k of ['helper_socket', 'image_cache_dir'] as const) {
    const v = raw[k];
    if (v === undefined) continue;
    if (typeof v !== 'string' || !v.startsWith('/'))
      throw new Error(`${source}: ${k} must be an absolute path`);
    c[k] = v;
  }
  if (raw.logs !== undefined) c.logs = parseLogsConfig(raw.logs, source);
  if (raw.warm !== undefined) {
    const w = raw.warm as Record<string, unknown>;
    if (typeof w !== 'object' || w === null || Array.isArray(w))
      throw new Error(`${source}: warm must be a table`);
    for (const k of Object.keys(w)) if (k !== 'auto') throw new Error(`${source}: unknown key "warm.${k}"`);
    if (w.auto !== undefined) {
      if (typeof w.auto !== 'boolean') throw new Error(`${source}: warm.auto must be true or false`);
      c.warm.auto = w.auto;
    }
  }
  if (raw.images !== undefined) c.images = parseImagesConfig(raw.images, source);
  if (raw.egress !== undefined) c.egress = parseEgressConfig(raw.egress, source);
  if (raw.bridge_name !== undefined) {
    if (typeof raw.bridge_name !== 'string' || !/^br-banger[a-z0-9-]{0,6}$/.test(raw.bridge_name))
      throw new Error(
        `${source}: bridge_name must be br-banger, optionally followed by up to six of [a-z0-9-]`,
      );
    c.bridge_name = raw.bridge_name;
  }
  if (raw.bridge_cidr !== undefined) {
    const m =
      typeof raw.bridge_cidr === 'string'
        ? /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(raw.bridge_cidr)
        : null;
    const prefix = m ? Number(m[2]) : NaN;
    const hostBits = m ? m[1]!.split('.').reduce((n, o) => n * 256 + Number(o), 0) % 2 ** (32 - prefix) : 1;
    if (
      !m ||
      m[1]!.split('.').some((o) => Number(o) > 255) ||
      !(prefix >= 16 && prefix <= 29) ||
      hostBits !== 0
    )
      throw new Error(`${source}: bridge_cidr must be a network like 10.213.0.0/24 (prefix /16 to /29)`);
    c.bridge_cidr = raw.bridge_cidr as string;
  }
  if (raw.dns_port !== undefined) {
    if (
      typeof raw.dns_port !== 'number' ||
      !Number.isInteger(raw.dns_port) ||
      raw.dns_port < 0 ||
      raw.dns_port > 65535
    )
      throw new Error(`${source}: dns_port must be an integer from 0 (off) to 65535`);
    c.dns_port = raw.dns_port;
  }
  if (raw.vm_defaults !== undefined) {
    const d = raw.vm_defaults as Record<string, unknown>;
    if (typeof d !== 'object' || d === null) throw new Error(`${source}: vm_defaults must be a table`);
    for (const k of Object.keys(d))
      if (!VM_KEYS.has(k)) throw new Error(`${source}: unknown key "vm_defaults.${k}"`);
    if (d.vcpus !== undefined) {
      if (typeof d.vcpus !== 'number' || !Number.isInteger(d.vcpus) || d.vcpus < 1 || d.vcpus > 64)
        throw new Error(`${source}: vm_defaults.vcpus must be an integer from 1 to 64`);
      c.vm_defaults.vcpus = d.vcpus;
    }
    if (d.memory_mib !== undefined) {
      if (typeof d.memory_mib !== 'number' || !Number.isInteger(d.memory_mib) || d.memory_mib < 128)
        throw new Error(`${source}: vm_defaults.memory_mib must be an integer >= 128`);
      c.vm_defaults.memory_mib = d.memory_mib;
    }
    if (d.disk_size !== undefined) {
      if (typeof d.disk_size !== 'string' || !/^\d+[KMGT]?$/.test(d.disk_size))
        throw new Error(`${source}: vm_defaults.disk_size must look like 4G or 512M`);
      c.vm_defaults.disk_size = d.disk_size;
    }
    if (d.egress !== undefined) {
      if (typeof d.egress !== 'string') throw new Error(`${source}: vm_defaults.egress must be a string`);
      try {
        parseEgress(d.egress);
      } catch (err) {
        if (err instanceof EgressRuleError)
          throw new Error(`${source}: vm_defaults.egress: ${err.message}`, { cause: err });
        throw err;
      }
      c.vm_defaults.egress = d.egress;
    }
    if (d.idle_pause_after !== undefined) {
      if (typeof d.idle_pause_after !== 'string')
        throw new Error(
          `${source}: vm_defaults.idle_pause_after must be a duration in quotes, e.g. "30m" ("0" or "" for off)`,
        );
      try {
        c.vm_defaults.idle_pause_after_ms = parseIdleDuration(d.idle_pause_after);
      } catch (err) {
        if (err instanceof IdleDurationError)
          throw new Error(`${source}: vm_defaults.idle_pause_after: ${err.message}`, { cause: err });
        throw err;
      }
    }
  }
  return c;
}

export function loadConfig(path: string | undefined): DaemonConfig {
  if (!path || !existsSync(path))
    return {
      ...DEFAULT_CONFIG,
      vm_defaults: { ...DEFAULT_CONFIG.vm_defaults },
      warm: { ...DEFAULT_CONFIG.warm },
      images: {},
    };
  return parseConfig(readFileSync(path, 'utf8'), path);
}
