// The egress CA: made once (key 0600), leaves for a host verify against it with node's own TLS.
import { statSync } from 'node:fs';
import { once } from 'node:events';
import { createServer, connect, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EgressCa, OPENSSL_BINARY } from '../../src/egress/ca.ts';
import { execRunner, type Runner } from '../../src/hostnet/exec.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bgca');
afterAll(() => tmp.cleanup());

/** Connect to a TLS server presenting `leaf`, trusting only `ca`; resolves with the verify error or null. */
async function handshake(
  leaf: { cert: string; key: string },
  ca: string,
  servername: string,
): Promise<string | null> {
  const server = createServer({ cert: leaf.cert, key: leaf.key }, (s) => s.end());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  try {
    return await new Promise<string | null>((resolve) => {
      const s: TLSSocket = connect({ host: '127.0.0.1', port, servername, ca: [ca] }, () => {
        s.destroy();
        resolve(null);
      });
      s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
  } finally {
    server.close();
  }
}

describe('EgressCa', { timeout: 30_000 }, () => {
  const ca = new EgressCa(join(tmp.dir, 'egress'));

  it('makes the CA once: ca.key 0600, the same certificate on every call and for a second instance', async () => {
    const pem = await ca.certPem();
    expect(pem).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(statSync(ca.keyPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(tmp.dir, 'egress')).mode & 0o777).toBe(0o700);
    expect(await ca.certPem()).toBe(pem);
    expect(await new EgressCa(join(tmp.dir, 'egress')).certPem()).toBe(pem);
  });

  it('a leaf for a host verifies against the CA for that name, not for another', async () => {
    const pem = await ca.certPem();
    const leaf = await ca.leafFor('api.test');
    expect(await handshake(leaf, pem, 'api.test')).toBeNull();
    expect(await handshake(leaf, pem, 'other.test')).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    const stranger = await new EgressCa(join(tmp.dir, 'other')).certPem();
    expect(await handshake(leaf, stranger, 'api.test')).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  it('leaves are cached per host, and an IP address gets an IP SAN', async () => {
    const a = await ca.leafFor('API.test.');
    expect(await ca.leafFor('api.test')).toBe(a);
    const ipLeaf = await ca.leafFor('127.0.0.1');
    expect(await handshake(ipLeaf, await ca.certPem(), '')).toBeNull();
  });

  it('refuses a host name that is not one (it ends up in openssl argv)', async () => {
    await expect(ca.leafFor('-addext x')).rejects.toThrow(/invalid host name/);
    await expect(ca.leafFor('a b')).rejects.toThrow(/invalid host name/);
  });

  it('runs openssl by its absolute path through the given runner; a failure names the command', async () => {
    const calls: string[] = [];
    const spy: Runner = (file, args, opts) => {
      calls.push(file);
      return execRunner(file, args, opts);
    };
    const spied = new EgressCa(join(tmp.dir, 'spied'), { run: spy });
    await spied.leafFor('spy.test');
    expect(calls).toEqual([OPENSSL_BINARY, OPENSSL_BINARY]);
    expect(OPENSSL_BINARY).toBe('/usr/bin/openssl');
    const broken = new EgressCa(join(tmp.dir, 'broken'), { openssl: '/nonexistent/openssl' });
    await expect(broken.certPem()).rejects.toThrow(/\/nonexistent\/openssl req/);
  });
});
