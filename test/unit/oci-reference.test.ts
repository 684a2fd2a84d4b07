import { describe, expect, it } from 'vitest';
import {
  formatReference,
  manifestReference,
  parseReference,
  registryApiHost,
} from '../../src/image/oci/reference.ts';
import { isLoopbackHost } from '../../src/image/oci/http.ts';
import { parseChallenge } from '../../src/image/oci/registry.ts';
import {
  credentialsFromAuths,
  normalizeConfigKey,
  parseDockerConfig,
} from '../../src/image/oci/credentials.ts';
import { parseManifestDoc, pickPlatform, parsePlatform } from '../../src/image/oci/manifest.ts';

const D = `sha256:${'a'.repeat(64)}`;

describe('parseReference', () => {
  it.each([
    ['debian', 'docker.io/library/debian:latest'],
    ['debian:12', 'docker.io/library/debian:12'],
    ['library/debian:12-slim', 'docker.io/library/debian:12-slim'],
    ['docker.io/debian', 'docker.io/library/debian:latest'],
    ['index.docker.io/user/app:v1', 'docker.io/user/app:v1'],
    ['user/app', 'docker.io/user/app:latest'],
    ['ghcr.io/org/team/app:1.2.3', 'ghcr.io/org/team/app:1.2.3'],
    ['localhost/app', 'localhost/app:latest'],
    ['localhost:5000/app:dev', 'localhost:5000/app:dev'],
    ['127.0.0.1:5000/a/b', '127.0.0.1:5000/a/b:latest'],
    [`quay.io/x/y@${D}`, `quay.io/x/y@${D}`],
    [`debian:12@${D}`, `docker.io/library/debian:12@${D}`],
    ['[::1]:5000/app', '[::1]:5000/app:latest'],
  ])('%s → %s', (input, canonical) => {
    expect(formatReference(parseReference(input))).toBe(canonical);
  });

  it('keeps the parts apart and asks by digest when there is one', () => {
    const r = parseReference(`localhost:5000/a/b:t@${D}`);
    expect(r).toEqual({ registry: 'localhost:5000', repository: 'a/b', tag: 't', digest: D });
    expect(manifestReference(r)).toBe(D);
    expect(manifestReference(parseReference('a:b'))).toBe('b');
    expect(registryApiHost('docker.io')).toBe('registry-1.docker.io');
    expect(registryApiHost('ghcr.io')).toBe('ghcr.io');
  });

  it.each([
    ['', /empty/],
    ['Debian', /lowercase/],
    ['a//b', /lowercase/],
    ['a:b:c', /lowercase|tag/],
    ['app@sha256:abc', /digest must be/],
    ['app:-bad', /bad tag/],
    ['a/../b', /lowercase/],
  ])('refuses %j', (input, re) => {
    expect(() => parseReference(input)).toThrow(re);
  });
});

describe('registry helpers', () => {
  it('loopback hosts may use plain HTTP, nothing else', () => {
    for (const h of ['localhost', 'localhost:5000', '127.0.0.1:80', '127.1.2.3', '[::1]:5000', '::1']) {
      expect(isLoopbackHost(h)).toBe(true);
    }
    for (const h of ['10.0.0.1:5000', 'registry.example', '128.0.0.1', 'localhost.example.com']) {
      expect(isLoopbackHost(h)).toBe(false);
    }
  });

  it('parses WWW-Authenticate challenges', () => {
    expect(
      parseChallenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"',
      ),
    ).toEqual({
      scheme: 'bearer',
      params: {
        realm: 'https://auth.docker.io/token',
        service: 'registry.docker.io',
        scope: 'repository:library/debian:pull',
      },
    });
    expect(parseChallenge('Basic realm="x y"')).toEqual({ scheme: 'basic', params: { realm: 'x y' } });
  });
});

describe('docker config credentials', () => {
  const cfg = parseDockerConfig(
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: Buffer.from('hubuser:hub:pass').toString('base64') },
        'http://localhost:5000': { auth: Buffer.from('l:p').toString('base64') },
        'ghcr.io': { identitytoken: 'refresh-me' },
      },
    }),
  );

  it('finds auths by normalized host (the password may contain a colon)', () => {
    expect(normalizeConfigKey('https://index.docker.io/v1/')).toBe('docker.io');
    expect(normalizeConfigKey('https://r.example:5000/v2/')).toBe('r.example:5000');
    expect(credentialsFromAuths(cfg, 'docker.io')).toEqual({ username: 'hubuser', password: 'hub:pass' });
    expect(credentialsFromAuths(cfg, 'localhost:5000')).toEqual({ username: 'l', password: 'p' });
    expect(credentialsFromAuths(cfg, 'ghcr.io')).toEqual({ identityToken: 'refresh-me' });
    expect(credentialsFromAuths(cfg, 'quay.io')).toBeUndefined();
  });
});

describe('manifests and platforms', () => {
  const desc = (architecture: string, variant?: string, extra: object = {}) => ({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    digest: `sha256:${architecture
      .padEnd(64, '0')
      .replace(/[^0-9a-f]/g, '0')
      .slice(0, 64)}`,
    size: 100,
    platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) },
    ...extra,
  });
  const index = parseManifestDoc(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          desc('arm', 'v7'),
          desc('arm64', 'v8'),
          desc('amd64'),
          {
            ...desc('unknown'),
            platform: { os: 'unknown', architecture: 'unknown' },
            annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
          },
        ],
      }),
    ),
  );

  it('picks by os/arch, arm64 means v8, an absent variant is refused when one was asked', () => {
    if (index.kind !== 'index') throw new Error('want index');
    expect(pickPlatform(index, parsePlatform('linux/amd64')).platform?.architecture).toBe('amd64');
    expect(pickPlatform(index, parsePlatform('linux/arm64')).platform?.variant).toBe('v8');
    expect(pickPlatform(index, parsePlatform('linux/arm/v7')).platform?.variant).toBe('v7');
    expect(() => pickPlatform(index, parsePlatform('linux/arm/v6'))).toThrow(
      'no linux/arm/v6 image in the index; it has: linux/arm/v7, linux/arm64/v8, linux/amd64',
    );
  });

  it('refuses schema 1, artifacts and unknown layer types', () => {
    expect(() => parseManifestDoc(Buffer.from('{"schemaVersion":1}'))).toThrow(/schema 1/);
    const man = (configType: string, layerType: string) =>
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          config: { mediaType: configType, digest: D, size: 1 },
          layers: [{ mediaType: layerType, digest: D, size: 1 }],
        }),
      );
    expect(() => parseManifestDoc(man('application/vnd.cncf.helm.config.v1+json', 'x'))).toThrow(
      /not a container image/,
    );
    expect(() =>
      parseManifestDoc(man('application/vnd.oci.image.config.v1+json', 'application/x-bzip2')),
    ).toThrow(/unsupported layer media type/);
    expect(
      parseManifestDoc(
        man('application/vnd.oci.image.config.v1+json', 'application/vnd.oci.image.layer.v1.tar+zstd'),
      ).kind,
    ).toBe('manifest');
    expect(() => parsePlatform('linux')).toThrow(/os\/architecture/);
  });
});
