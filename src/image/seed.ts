// The per-VM seed disk: a few MiB of ext4 (label banger-seed) that the guest's initramfs and
// banger-seed.service read at boot (guest/bin/banger-seed documents the layout). Built from a
// temp directory with mkfs.ext4 -d: no root, no loop mount, milliseconds.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { run } from './exec.ts';

export const SEED_FORMAT_VERSION = 1;
export const SEED_LABEL = 'banger-seed';

export interface SeedFile {
  /** Absolute path in the guest; installed root-owned. */
  path: string;
  content: string | Uint8Array;
  /** Default 0644. */
  mode?: number;
}

export interface SeedOptions {
  /** The image file to write (replaced atomically). */
  path: string;
  authorizedKeys: string | string[];
  hostKeyPrivate: string;
  hostKeyPublic: string;
  hostname: string;
  machineId: string;
  files?: SeedFile[];
  /** Written as /etc/resolv.conf (the image has no resolver configured). */
  nameservers?: string[];
  label?: string;
  signal?: AbortSignal;
}

export interface SeedEntry {
  content: Buffer;
  mode: number;
}

const HOSTNAME_RE =
  /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export function validateHostname(name: string): void {
  if (name.length > 64 || !HOSTNAME_RE.test(name))
    throw new Error(`invalid hostname: ${JSON.stringify(name)}`);
}

export function validateMachineId(id: string): void {
  if (!/^[0-9a-f]{32}$/.test(id) || /^0+$/.test(id)) {
    throw new Error(`invalid machine-id (want 32 lowercase hex digits, not all zero): ${JSON.stringify(id)}`);
  }
}

/** A fresh machine-id the way systemd makes them: 128 random bits shaped as a v4 UUID. */
export function randomMachineId(): string {
  const b = randomBytes(16);
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  return b.toString('hex');
}

function normaliseGuestPath(p: string): string {
  if (!p.startsWith('/')) throw new Error(`seed file path must be absolute: ${p}`);
  if (p.split('/').includes('..')) throw new Error(`seed file path must not contain '..': ${p}`);
  const n = posix.normalize(p);
  if (n === '/' || n.endsWith('/')) throw new Error(`seed file path must name a file: ${p}`);
  return n;
}

/** The seed's files (relative path → content and mode): pure, so the layout is testable. */
export function seedLayout(o: Omit<SeedOptions, 'path' | 'signal'>): Map<string, SeedEntry> {
  validateHostname(o.hostname);
  validateMachineId(o.machineId);
  const keys = (Array.isArray(o.authorizedKeys) ? o.authorizedKeys : o.authorizedKeys.split('\n'))
    .map((k) => k.trim())
    .filter((k) => k !== '');
  if (keys.length === 0) throw new Error('seed: no authorized keys');
  if (!o.hostKeyPrivate.includes('PRIVATE KEY')) throw new Error('seed: hostKeyPrivate is not a private key');
  const pub = o.hostKeyPublic.trim();
  if (!pub.startsWith('ssh-ed25519 ')) throw new Error('seed: hostKeyPublic must be an ssh-ed25519 key');

  const out = new Map<string, SeedEntry>();
  const put = (p: string, content: string | Uint8Array, mode: number): void => {
    out.set(p, { content: typeof content === 'string' ? Buffer.from(content) : Buffer.from(content), mode });
  };
  put('banger-seed.version', `${SEED_FORMAT_VERSION}\n`, 0o644);
  put('authorized_keys', keys.join('\n') + '\n', 0o600);
  put(
    'ssh_host_ed25519_key',
    o.hostKeyPrivate.endsWith('\n') ? o.hostKeyPrivate : `${o.hostKeyPrivate}\n`,
    0o600,
  );
  put('ssh_host_ed25519_key.pub', `${pub}\n`, 0o644);
  put('hostname', `${o.hostname}\n`, 0o644);
  put('machine-id', `${o.machineId}\n`, 0o644);
  if (o.nameservers && o.nameservers.length > 0) {
    for (const ns of o.nameservers) {
      if (!/^[0-9a-fA-F.:]+$/.test(ns)) throw new Error(`invalid nameserver: ${ns}`);
    }
    put('files/etc/resolv.conf', o.nameservers.map((ns) => `nameserver ${ns}`).join('\n') + '\n', 0o644);
  }
  for (const f of o.files ?? []) {
    put(`files${normaliseGuestPath(f.path)}`, f.content, f.mode ?? 0o644);
  }
  return out;
}

/** Write the layout into dir (which must exist). */
export async function writeSeedDir(dir: string, layout: Map<string, SeedEntry>): Promise<void> {
  for (const [rel, e] of layout) {
    const p = join(dir, rel);
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, e.content, { mode: e.mode });
    await chmod(p, e.mode); // writeFile's mode is filtered by the umask
  }
}

export async function buildSeedImage(o: SeedOptions): Promise<{ path: string; size: number }> {
  const layout = seedLayout(o);
  const tmp = await mkdtemp(join(tmpdir(), 'banger-seed-'));
  const part = `${o.path}.part-${process.pid}`;
  try {
    const tree = join(tmp, 'seed');
    await mkdir(tree);
    await writeSeedDir(tree, layout);
    let bytes = 0;
    for (const e of layout.values()) bytes += e.content.length;
    const sizeKiB = Math.max(4096, Math.ceil((bytes * 1.5) / 1024) + 2048);
    const inodes = Math.max(128, layout.size * 4);
    await run(
      [
        'mkfs.ext4',
        '-q',
        '-F',
        '-L',
        o.label ?? SEED_LABEL,
        '-O',
        '^has_journal,^resize_inode',
        '-N',
        String(inodes),
        '-m',
        '0',
        '-E',
        'root_owner=0:0',
        '-d',
        tree,
        part,
        `${sizeKiB}k`,
      ],
      { signal: o.signal },
    );
    await rename(part, o.path);
    return { path: o.path, size: (await stat(o.path)).size };
  } finally {
    await rm(tmp, { recursive: true, force: true });
    await rm(part, { force: true });
  }
}

export interface HostKey {
  privateKey: string;
  /** `ssh-ed25519 AAAA... comment` */
  publicKey: string;
}

/** A fresh ed25519 host key (ssh-keygen -t ed25519 -N ''), generated on the host before boot. */
export async function generateHostKey(comment = 'banger-guest', signal?: AbortSignal): Promise<HostKey> {
  const tmp = await mkdtemp(join(tmpdir(), 'banger-hostkey-'));
  try {
    const file = join(tmp, 'key');
    await run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { signal });
    return {
      privateKey: await readFile(file, 'utf8'),
      publicKey: (await readFile(`${file}.pub`, 'utf8')).trim(),
    };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * A known_hosts line for the guest: `[127.0.0.1]:2222 ssh-ed25519 AAAA...` (the comment of the
 * public key is dropped). Port 22 hosts are written bare, as ssh looks them up.
 */
export function knownHostsLine(host: string, port: number, publicKey: string): string {
  const [type, blob] = publicKey.trim().split(/\s+/);
  if (!type || !blob) throw new Error('knownHostsLine: malformed public key');
  const name = port === 22 ? host : `[${host}]:${port}`;
  return `${name} ${type} ${blob}`;
}
