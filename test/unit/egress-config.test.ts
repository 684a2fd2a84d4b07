// The [egress] config table: ca_bundles (absolute PEM files) and proxy_port, strictly checked.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.ts';
import { loadCaBundles } from '../../src/egress/config.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bgec');
afterAll(() => tmp.cleanup());

describe('[egress]', () => {
  it('parses ca_bundles and proxy_port; absent means none', () => {
    expect(parseConfig('').egress).toBeUndefined();
    expect(parseConfig('[egress]\nca_bundles = ["/a.pem"]\nproxy_port = 8128\n').egress).toEqual({
      ca_bundles: ['/a.pem'],
      proxy_port: 8128,
    });
  });

  it('refuses relative paths, bad ports and unknown keys', () => {
    expect(() => parseConfig('[egress]\nca_bundles = ["a.pem"]\n')).toThrow(/absolute paths/);
    expect(() => parseConfig('[egress]\nproxy_port = 0\n')).toThrow(/port number/);
    expect(() => parseConfig('[egress]\nbundles = []\n')).toThrow(/unknown key "egress.bundles"/);
  });

  it('loadCaBundles reads PEM files and names the one that is not', () => {
    const good = join(tmp.dir, 'ca.pem');
    const bad = join(tmp.dir, 'bad.pem');
    writeFileSync(good, '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n');
    writeFileSync(bad, 'not a certificate');
    expect(loadCaBundles([good])).toHaveLength(1);
    expect(() => loadCaBundles([bad])).toThrow(`${bad} holds no PEM certificate`);
    expect(() => loadCaBundles([join(tmp.dir, 'missing.pem')])).toThrow(/cannot read/);
  });
});
