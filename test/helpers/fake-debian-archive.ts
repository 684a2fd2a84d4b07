// A fake Debian archive on 127.0.0.1 for kernel.catalog / kernel.pull: a flat repository
// (Packages + Release, served `[trusted=yes]`) of tiny .debs built with dpkg-deb, each kernel
// package holding a fake boot/vmlinuz-<release> and a lib/modules/<release>/ tree whose
// modules.builtin says virtio_mmio and virtio_blk are built in (so the initramfs needs no .ko).
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export interface FakeDeb {
  package: string;
  version: string;
  /** Files inside the package: path → content. */
  files?: Record<string, string | Buffer>;
  depends?: string;
  description?: string;
}

/** A kernel package as Debian names it, with a fake bzImage and a modules tree. */
export function kernelDeb(release: string, version: string): FakeDeb {
  return {
    package: `linux-image-${release}`,
    version,
    description: `Linux ${release} (fake)`,
    files: {
      [`boot/vmlinuz-${release}`]: Buffer.concat([Buffer.from('MZ fake kernel '), Buffer.alloc(4096, 7)]),
      [`boot/config-${release}`]: 'CONFIG_VIRTIO_BLK=y\n',
      [`lib/modules/${release}/modules.builtin`]:
        'kernel/drivers/virtio/virtio_mmio.ko\nkernel/drivers/block/virtio_blk.ko\n',
      [`lib/modules/${release}/modules.order`]: '',
    },
  };
}

export const BUSYBOX_DEB: FakeDeb = {
  package: 'busybox-static',
  version: '1.35.0-4+b3',
  files: { 'bin/busybox': '#!/bin/sh\necho fake busybox\n' },
};

const sha = (alg: string, b: Buffer): string => createHash(alg).update(b).digest('hex');

export class FakeDebianArchive {
  readonly dir: string;
  private server: Server | undefined;
  /** Requests seen (paths), for asserting what was fetched. */
  readonly requests: string[] = [];
  /** Hold .deb downloads this long (a pull to cancel mid-download). */
  debDelayMs = 0;

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(join(dir, 'repo'), { recursive: true });
  }

  /** Build the .debs and write Packages and Release (replacing what was there). */
  publish(debs: readonly FakeDeb[], opts: { corrupt?: string } = {}): void {
    const stanzas: string[] = [];
    for (const d of debs) {
      const root = join(this.dir, 'build', `${d.package}_${d.version}`);
      mkdirSync(join(root, 'DEBIAN'), { recursive: true });
      for (const [path, body] of Object.entries(d.files ?? {})) {
        mkdirSync(join(root, path, '..'), { recursive: true });
        writeFileSync(join(root, path), body);
      }
      const control = [
        `Package: ${d.package}`,
        `Version: ${d.version}`,
        'Architecture: amd64',
        'Maintainer: banger tests <tests@example.invalid>',
        ...(d.depends ? [`Depends: ${d.depends}`] : []),
        `Description: ${d.description ?? d.package}`,
      ].join('\n');
      writeFileSync(join(root, 'DEBIAN', 'control'), `${control}\n`);
      const file = `${d.package}_${d.version.replaceAll(':', '%3a')}_amd64.deb`;
      const out = join(this.dir, 'repo', file);
      execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '-b', root, out], { stdio: 'ignore' });
      const bytes = readFileSync(out);
      // A wrong checksum in the index for this package: the download must be refused.
      const hash = opts.corrupt === d.package ? sha('sha256', Buffer.from('other')) : sha('sha256', bytes);
      stanzas.push(
        [
          control,
          'Section: kernel',
          'Priority: optional',
          `Installed-Size: ${Math.ceil(bytes.length / 1024) * 3}`,
          `Filename: ./${file}`,
          `Size: ${statSync(out).size}`,
          `MD5sum: ${sha('md5', bytes)}`,
          `SHA256: ${hash}`,
        ].join('\n'),
      );
    }
    const packages = Buffer.from(`${stanzas.join('\n\n')}\n`);
    writeFileSync(join(this.dir, 'repo', 'Packages'), packages);
    const release = [
      'Origin: banger-test',
      'Label: banger-test',
      `Date: ${new Date().toUTCString()}`,
      'MD5Sum:',
      ` ${sha('md5', packages)} ${packages.length} Packages`,
      'SHA256:',
      ` ${sha('sha256', packages)} ${packages.length} Packages`,
    ].join('\n');
    writeFileSync(join(this.dir, 'repo', 'Release'), `${release}\n`);
  }

  /** Serve the repository on 127.0.0.1; returns the sources.list line. */
  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      const path = decodeURIComponent((req.url ?? '/').split('?')[0] ?? '/');
      this.requests.push(path);
      if (path.includes('..')) {
        res.writeHead(400).end();
        return;
      }
      const send = (): void => {
        try {
          const body = readFileSync(join(this.dir, 'repo', path));
          res.writeHead(200, { 'content-length': body.length }).end(req.method === 'HEAD' ? undefined : body);
        } catch {
          res.writeHead(404).end();
        }
      };
      if (path.endsWith('.deb') && this.debDelayMs > 0) setTimeout(send, this.debDelayMs).unref();
      else send();
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this.sourcesLine();
  }

  get port(): number {
    return (this.server?.address() as AddressInfo).port;
  }

  sourcesLine(): string {
    return `deb [trusted=yes] http://127.0.0.1:${this.port}/ ./\n`;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    s?.closeAllConnections();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
