// The guest setup script, run with sh against a directory standing in for the guest's root:
// the environment in /etc/environment, profile.d and sshd SetEnv, the CA appended once, and a
// second run replacing banger's block instead of adding another.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUEST_CA_PATH, guestEnv, guestSetupScript, type GuestEgressSetup } from '../../src/egress/guest.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bgge');
afterAll(() => tmp.cleanup());

const PEM = '-----BEGIN CERTIFICATE-----\nMIIBfakeLINEunique0123\nMIIBsecond\n-----END CERTIFICATE-----\n';
const setup: GuestEgressSetup = {
  proxyUrl: 'http://10.0.2.100:3128',
  placeholders: { API_KEY: 'banger-secret-0123456789abcdef0123456789abcdef' },
  caPem: PEM,
};

function runIn(root: string, s: GuestEgressSetup): void {
  execFileSync('/bin/sh', ['-c', guestSetupScript(s, root)], { input: s.caPem ?? '' });
}

describe('guest egress setup', () => {
  it('guestEnv: proxy variables, NO_PROXY for .vm, the CA for node, then the secrets', () => {
    expect(guestEnv(setup).map(([n]) => n)).toEqual([
      'HTTP_PROXY',
      'HTTPS_PROXY',
      'http_proxy',
      'https_proxy',
      'NO_PROXY',
      'no_proxy',
      'NODE_EXTRA_CA_CERTS',
      'API_KEY',
    ]);
    expect(guestEnv({ placeholders: {} })).toEqual([]);
    expect(() => guestEnv({ placeholders: { A: "x'; rm -rf /" } })).toThrow(/refusing/);
    expect(() => guestEnv({ placeholders: { 'a b': 'x' } })).toThrow(/refusing/);
  });

  it('writes the environment everywhere and the CA once, idempotently', () => {
    const root = join(tmp.dir, 'root');
    mkdirSync(join(root, 'etc/ssl/certs'), { recursive: true });
    writeFileSync(join(root, 'etc/ssl/certs/ca-certificates.crt'), 'SYSTEM BUNDLE\n');
    writeFileSync(join(root, 'etc/environment'), 'LANG=C.UTF-8\n');
    runIn(root, setup);
    runIn(root, setup);
    const env = readFileSync(join(root, 'etc/environment'), 'utf8');
    expect(env.startsWith('LANG=C.UTF-8\n# banger-egress begin\n')).toBe(true);
    expect(env.match(/# banger-egress begin/g)).toHaveLength(1);
    expect(env).toContain('API_KEY=banger-secret-0123456789abcdef0123456789abcdef\n');
    expect(env).toContain('HTTPS_PROXY=http://10.0.2.100:3128\n');
    expect(readFileSync(join(root, 'etc/profile.d/banger-egress.sh'), 'utf8')).toContain(
      'export API_KEY=banger-secret-0123456789abcdef0123456789abcdef\n',
    );
    const sshd = readFileSync(join(root, 'etc/ssh/sshd_config.d/banger-egress.conf'), 'utf8');
    expect(sshd).toMatch(
      /^SetEnv HTTP_PROXY=http:\/\/10\.0\.2\.100:3128 .* API_KEY=banger-secret-[0-9a-f]{32}\n$/,
    );
    expect(readFileSync(join(root, GUEST_CA_PATH), 'utf8')).toBe(PEM);
    const bundle = readFileSync(join(root, 'etc/ssl/certs/ca-certificates.crt'), 'utf8');
    expect(bundle).toBe(`SYSTEM BUNDLE\n${PEM}`);
  });

  it('a setup without anything to set removes banger’s block and SetEnv', () => {
    const root = join(tmp.dir, 'root');
    runIn(root, { placeholders: {} });
    expect(readFileSync(join(root, 'etc/environment'), 'utf8')).toBe(
      'LANG=C.UTF-8\n# banger-egress begin\n# banger-egress end\n',
    );
  });
});
