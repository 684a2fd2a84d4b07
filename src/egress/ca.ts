// The egress proxy's per-install CA: when a VM has secrets, the proxy terminates the guest's TLS
// with a leaf certificate for the host the guest asked for, signed by this CA, which banger puts
// into the guest's trust store at create. Keys and certificates are made by the system `openssl`
// binary (argv, never a shell, through hostnet's execRunner: bounded, fixed PATH and locale, by
// its absolute path): ECDSA P-256, ~25 ms a leaf, no native or npm dependency.
// STATE/egress/ca.crt (0644) and ca.key (0600); leaves live in memory only (a bounded cache).
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execRunner, type Runner } from '../hostnet/exec.ts';

export const CA_SUBJECT = '/CN=banger egress CA';
const CA_DAYS = 3650;
const LEAF_DAYS = 30;
/** A cached leaf older than this is made again (well before it expires). */
const LEAF_MAX_AGE_MS = 7 * 24 * 3600_000;
const LEAF_CACHE_MAX = 512;
// Host names as the proxy passes them: checked again here, since they end up in openssl's argv.
const HOST_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?$/;

export interface LeafCert {
  cert: string;
  key: string;
}

/**
 * Where openssl is: an absolute path, as for every tool the daemon runs (src/hostnet/exec.ts
 * DEFAULT_TOOLS, src/engine/qemu-argv.ts SOCAT_BINARY): the daemon's PATH cannot substitute
 * another binary. Debian's `openssl` package.
 */
export const OPENSSL_BINARY = '/usr/bin/openssl';

export interface EgressCaOptions {
  /** How openssl is run (tests); hostnet's execRunner by default. */
  run?: Runner;
  openssl?: string;
}

export class EgressCa {
  readonly dir: string;
  readonly certPath: string;
  readonly keyPath: string;
  private ready: Promise<string> | undefined;
  private readonly leaves = new Map<string, { at: number; leaf: Promise<LeafCert> }>();
  private readonly run: Runner;
  private readonly opensslPath: string;

  /** `dir` is STATE/egress. */
  constructor(dir: string, opts: EgressCaOptions = {}) {
    this.dir = dir;
    this.run = opts.run ?? execRunner;
    this.opensslPath = opts.openssl ?? OPENSSL_BINARY;
    this.certPath = join(dir, 'ca.crt');
    this.keyPath = join(dir, 'ca.key');
  }

  /** The runner's error names the command and carries openssl's stderr. */
  private async openssl(args: string[]): Promise<void> {
    await this.run(this.opensslPath, args, { timeoutMs: 10_000 });
  }

  /** The CA certificate (PEM), made on first use. */
  certPem(): Promise<string> {
    this.ready ??= this.ensure().catch((err: unknown) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  private async ensure(): Promise<string> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const have = await Promise.all(
      [this.certPath, this.keyPath].map((p) =>
        stat(p).then(
          () => true,
          () => false,
        ),
      ),
    );
    if (have.every(Boolean)) {
      await chmod(this.keyPath, 0o600);
      return readFile(this.certPath, 'utf8');
    }
    // Made under temp names and renamed (key first): a crash leaves the old pair or none.
    const tmp = await mkdtemp(join(this.dir, '.ca-'));
    try {
      const key = join(tmp, 'ca.key');
      const crt = join(tmp, 'ca.crt');
      await this.openssl([
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', key, '-out', crt, '-days', String(CA_DAYS), '-subj', CA_SUBJECT,
        '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      ]); // prettier-ignore
      await chmod(key, 0o600);
      await chmod(crt, 0o644);
      await rename(key, this.keyPath);
      await rename(crt, this.certPath);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return readFile(this.certPath, 'utf8');
  }

  /** A leaf certificate for `host` (a DNS name or an IP address), from the cache when fresh. */
  leafFor(host: string): Promise<LeafCert> {
    const h = host.toLowerCase().replace(/\.$/, '');
    if (!isIP(h) && !HOST_RE.test(h))
      return Promise.reject(new Error(`invalid host name for a certificate: ${JSON.stringify(host)}`));
    const now = Date.now();
    const hit = this.leaves.get(h);
    if (hit && now - hit.at < LEAF_MAX_AGE_MS) {
      // Most recently used last, so eviction drops the oldest use.
      this.leaves.delete(h);
      this.leaves.set(h, hit);
      return hit.leaf;
    }
    const leaf = this.makeLeaf(h);
    this.leaves.set(h, { at: now, leaf });
    leaf.catch(() => this.leaves.delete(h));
    while (this.leaves.size > LEAF_CACHE_MAX) {
      const oldest = this.leaves.keys().next().value;
      if (oldest === undefined) break;
      this.leaves.delete(oldest);
    }
    return leaf;
  }

  private async makeLeaf(host: string): Promise<LeafCert> {
    await this.certPem();
    const tmp = await mkdtemp(join(this.dir, '.leaf-'));
    try {
      const key = join(tmp, 'leaf.key');
      const crt = join(tmp, 'leaf.crt');
      const san = isIP(host) ? `IP:${host}` : `DNS:${host}`;
      await this.openssl([
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', key, '-out', crt, '-days', String(LEAF_DAYS),
        // The CN is informative only (clients check the SAN); a random serial per leaf.
        '-subj', `/CN=${isIP(host) ? 'banger egress' : host}`,
        '-set_serial', `0x${randomBytes(15).toString('hex')}`,
        '-CA', this.certPath, '-CAkey', this.keyPath,
        '-addext', `subjectAltName=${san}`,
        '-addext', 'basicConstraints=critical,CA:FALSE',
        '-addext', 'keyUsage=critical,digitalSignature',
        '-addext', 'extendedKeyUsage=serverAuth',
      ]); // prettier-ignore
      return { cert: await readFile(crt, 'utf8'), key: await readFile(key, 'utf8') };
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
}
