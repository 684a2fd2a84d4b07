// Secrets: values the egress proxy puts into requests for the guest, which only ever sees a
// placeholder. One file per secret under STATE/secrets (dir 0700, files 0600), written to a temp
// name and renamed, so a reader sees the old value or the new one, never half of one.
// Nothing here logs a value; callers must not either (the RPC log and op trace never see params).
import { createHmac, randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.ts';
import { sweepDir } from './sweep.ts';

/** Secret names: environment variable names, so the guest can hold the placeholder in one. */
export const SECRET_NAME_RE = /^[A-Z_][A-Z0-9_]*$/;
export const SECRET_NAME_MAX = 64;
/** Values go into HTTP headers: small, and no bytes that would end or split a header line. */
export const SECRET_VALUE_MAX = 16 * 1024;
/** `banger-secret-` + 32 hex digits: what the guest holds instead of the value. */
export const PLACEHOLDER_RE = /banger-secret-[0-9a-f]{32}/g;

export class SecretError extends Error {
  readonly code: 'bad_request' | 'not_found';
  constructor(code: 'bad_request' | 'not_found', message: string) {
    super(message);
    this.name = 'SecretError';
    this.code = code;
  }
}

export function validateSecretName(name: string): void {
  if (name.length === 0 || name.length > SECRET_NAME_MAX || !SECRET_NAME_RE.test(name))
    throw new SecretError(
      'bad_request',
      `invalid secret name ${JSON.stringify(name)}: want [A-Z_][A-Z0-9_]*, at most ${SECRET_NAME_MAX} characters`,
    );
}

/** Why a value cannot be stored (the message never quotes the value). */
export function validateSecretValue(value: string): void {
  if (value.length === 0) throw new SecretError('bad_request', 'the secret value is empty');
  if (Buffer.byteLength(value) > SECRET_VALUE_MAX)
    throw new SecretError('bad_request', `the secret value is longer than ${SECRET_VALUE_MAX} bytes`);
  // CR/LF/NUL would let the value end a header and forge others when it is substituted.
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value))
    throw new SecretError(
      'bad_request',
      'the secret value holds control characters (newline, carriage return, NUL…): it must fit in one HTTP header',
    );
}

/** A random placeholder (tests; VMs get derivePlaceholder's). */
export function newPlaceholder(): string {
  return `banger-secret-${randomBytes(16).toString('hex')}`;
}

/**
 * A VM's placeholder for a secret: HMAC(install key, vm id, name), so the daemon finds it again
 * after a restart without storing it, and nobody without the key can guess another VM's.
 */
export function derivePlaceholder(key: Buffer, vmId: string, name: string): string {
  const mac = createHmac('sha256', key).update(`${vmId}\0${name}`).digest('hex');
  return `banger-secret-${mac.slice(0, 32)}`;
}

/** The install's placeholder key (STATE/egress/placeholder.key, 0600), made on first use. */
export async function loadPlaceholderKey(path: string): Promise<Buffer> {
  try {
    const k = await readFile(path);
    if (k.length >= 32) return k;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const key = randomBytes(32);
  await mkdir(join(path, '..'), { recursive: true, mode: 0o700 });
  // The temp name is the one src/egress/side.ts sweeps at start-up.
  await writeFileAtomic(path, key, { mode: 0o600, tmp: `${path}.tmp-${process.pid}` });
  return key;
}

export interface SecretInfo {
  name: string;
  updatedAt: Date;
}

export class SecretStore {
  readonly dir: string;
  /**
   * Values read so far (the proxy asks on every substitution): set and rm in this process keep
   * it current; the files are written by nobody else (STATE/secrets is the daemon's, 0700).
   */
  private readonly cache = new Map<string, string>();
  /** Bumped by every set and rm: a read that began before one must not fill the cache. */
  private generation = 0;

  /** `dir` is STATE/secrets. */
  constructor(dir: string) {
    this.dir = dir;
  }

  private async ensureDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // An existing directory keeps its mode through mkdir: tighten it.
    await chmod(this.dir, 0o700);
  }

  private path(name: string): string {
    validateSecretName(name);
    return join(this.dir, name);
  }

  /**
   * Once per set or rm, when its change is made (or failed): a read that began before does not
   * fill the cache (it may have read the old file), one that begins after reads the new one. Two
   * sets at once may rename in one order and return in the other: neither value stays cached.
   */
  private invalidate(name: string): void {
    this.generation++;
    this.cache.delete(name);
  }

  /** Store (or replace) a secret; `created` is false when it replaced one. */
  async set(name: string, value: string): Promise<{ created: boolean }> {
    const path = this.path(name);
    validateSecretValue(value);
    await this.ensureDir();
    try {
      const existed = await this.has(name);
      // The temp name is the one sweepTemp looks for.
      const tmp = join(this.dir, `.${name}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
      await writeFileAtomic(path, value, { mode: 0o600, fsync: true, tmp });
      return { created: !existed };
    } finally {
      this.invalidate(name);
    }
  }

  /**
   * Remove temp files of a set() that a crash (kill -9 between write and rename) left behind:
   * they hold a secret's value, which must not outlive a later `secret rm`. Call at start-up,
   * before anything calls set().
   */
  sweepTemp(): Promise<string[]> {
    return sweepDir(this.dir, (n) => /^\.[A-Z_][A-Z0-9_]*\.tmp-/.test(n));
  }

  async has(name: string): Promise<boolean> {
    try {
      return (await stat(this.path(name))).isFile();
    } catch {
      return false;
    }
  }

  /** The value, or undefined when there is no such secret. */
  async get(name: string): Promise<string | undefined> {
    const cached = this.cache.get(name);
    if (cached !== undefined) return cached;
    const gen = this.generation;
    try {
      const value = await readFile(this.path(name), 'utf8');
      if (gen === this.generation) this.cache.set(name, value);
      return value;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async list(): Promise<SecretInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: SecretInfo[] = [];
    for (const name of names.filter((n) => SECRET_NAME_RE.test(n)).sort()) {
      try {
        const s = await stat(join(this.dir, name));
        if (s.isFile()) out.push({ name, updatedAt: s.mtime });
      } catch {
        // Removed meanwhile.
      }
    }
    return out;
  }

  /** Remove a secret; not_found when there is none. */
  async rm(name: string): Promise<void> {
    const path = this.path(name);
    try {
      if (!(await this.has(name))) throw new SecretError('not_found', `secret ${name} not found`);
      await rm(path, { force: true });
    } finally {
      this.invalidate(name);
    }
  }
}

/** One `--secret NAME@HOST[,HOST…]` as given on the CLI / in the RPC `secrets` param. */
export interface SecretGrant {
  name: string;
  hosts: string[];
}

const HOST_RE = /^(?:\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** Parse `NAME@HOST[,HOST…]`; hosts are lower-cased, a leading `*.` allows any subdomain. */
export function parseSecretGrant(text: string): SecretGrant {
  const at = text.indexOf('@');
  if (at <= 0)
    throw new SecretError('bad_request', `--secret ${JSON.stringify(text)}: want NAME@HOST[,HOST…]`);
  const name = text.slice(0, at);
  validateSecretName(name);
  const hosts = text
    .slice(at + 1)
    .split(',')
    .map((h) => h.trim().toLowerCase());
  if (hosts.length === 0 || hosts.some((h) => h === ''))
    throw new SecretError('bad_request', `--secret ${name}: no host after @ (want NAME@HOST[,HOST…])`);
  for (const h of hosts) {
    if (h.length > 253 || !HOST_RE.test(h))
      throw new SecretError('bad_request', `--secret ${name}: invalid host ${JSON.stringify(h)}`);
  }
  return { name, hosts: [...new Set(hosts)] };
}

/** Whether `host` (as the client named it) is one of a grant's hosts. */
export function grantCovers(hosts: readonly string[], host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return hosts.some((g) =>
    g.startsWith('*.') ? h.endsWith(g.slice(1)) && h.length > g.length - 1 : h === g,
  );
}

/** A secret as a VM holds it: the hosts it may go to and the placeholder the guest sees. */
export interface VmSecret {
  name: string;
  hosts: string[];
  placeholder: string;
}

/** The VM's secrets whose placeholder occurs in `text`. */
export function placeholdersIn(text: string, secrets: readonly VmSecret[]): VmSecret[] {
  if (!text.includes('banger-secret-')) return [];
  return secrets.filter((s) => text.includes(s.placeholder));
}

export type HeaderSubstitution =
  { ok: true; rawHeaders: string[]; used: string[] } | { ok: false; name: string; reason: string };

/**
 * Replace the placeholders in a request's raw headers (name, value, name, value…) for a request to
 * `host`. Every placeholder must belong to a secret granted for `host`; the first one that is not
 * refuses the whole request. `values` holds the values of the secrets granted for `host`. Pure.
 */
export function substituteHeaders(
  rawHeaders: readonly string[],
  secrets: readonly VmSecret[],
  host: string,
  values: ReadonlyMap<string, string>,
): HeaderSubstitution {
  const out: string[] = [];
  const used = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    let value = rawHeaders[i + 1] ?? '';
    for (const s of placeholdersIn(`${name}\n${value}`, secrets)) {
      if (!grantCovers(s.hosts, host))
        return { ok: false, name: s.name, reason: `secret ${s.name} not allowed for ${host}` };
      const real = values.get(s.name);
      if (real === undefined)
        return {
          ok: false,
          name: s.name,
          reason: `secret ${s.name} is not set (banger secret set ${s.name})`,
        };
      value = value.split(s.placeholder).join(real);
      used.add(s.name);
    }
    out.push(name, value);
  }
  return { ok: true, rawHeaders: out, used: [...used] };
}

/**
 * A create's `secrets` param checked: each `NAME@HOST[,HOST…]` parsed, a name at most once, each
 * one set in the store (`exists`). SecretError with a message for the user otherwise.
 */
export async function planVmSecrets(
  texts: readonly string[],
  exists: (name: string) => Promise<boolean>,
): Promise<SecretGrant[]> {
  const grants = texts.map(parseSecretGrant);
  const seen = new Set<string>();
  for (const g of grants) {
    if (seen.has(g.name))
      throw new SecretError(
        'bad_request',
        `--secret ${g.name} given twice: list its hosts once (NAME@HOST,HOST)`,
      );
    seen.add(g.name);
    if (!(await exists(g.name)))
      throw new SecretError(
        'not_found',
        `secret ${g.name} is not set; store it first: banger secret set ${g.name}`,
      );
  }
  return grants;
}
