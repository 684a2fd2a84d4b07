// The CLI side of image pull / image import --oci-layout/--docker-archive: PATH[:TAG] splitting
// (a path with a colon still works) and the shared flags as params.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { imageFields } from '../../src/cli/format.ts';
import { commonPullParams, splitSourceArg } from '../../src/cli/image-pull.ts';
import { renderFields } from '../../src/cli/table.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cli-pull-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('splitSourceArg', () => {
  it('takes the longest existing prefix as the path and the rest as the tag', () => {
    mkdirSync(join(dir, 'layout'));
    expect(splitSourceArg(join(dir, 'layout'), '--oci-layout', 'dir')).toEqual({ path: join(dir, 'layout') });
    expect(splitSourceArg(`${join(dir, 'layout')}:v1`, '--oci-layout', 'dir')).toEqual({
      path: join(dir, 'layout'),
      tag: 'v1',
    });
    // A docker RepoTag has a colon of its own.
    writeFileSync(join(dir, 'app.tar'), '');
    expect(splitSourceArg(`${join(dir, 'app.tar')}:repo/app:1.2`, '--docker-archive', 'file')).toEqual({
      path: join(dir, 'app.tar'),
      tag: 'repo/app:1.2',
    });
    // A directory whose name has a colon (skopeo's oci:DIR:TAG habit) is still the path.
    mkdirSync(join(dir, 'debian:bookworm'));
    expect(splitSourceArg(join(dir, 'debian:bookworm'), '--oci-layout', 'dir')).toEqual({
      path: join(dir, 'debian:bookworm'),
    });
  });

  it('says what is wrong with the path', () => {
    writeFileSync(join(dir, 'f'), '');
    expect(() => splitSourceArg(join(dir, 'f'), '--oci-layout', 'dir')).toThrow(/not a directory/);
    expect(() => splitSourceArg(dir, '--docker-archive', 'file')).toThrow(/not a regular file/);
    expect(() => splitSourceArg(join(dir, 'nope:v1'), '--oci-layout', 'dir')).toThrow(
      /--oci-layout .*nope:v1: no such directory/,
    );
  });
});

describe('commonPullParams', () => {
  it('maps the flags and checks them', () => {
    expect(
      commonPullParams({ name: 'app', platform: 'linux/arm64/v8', size: '8gib', default: true }),
    ).toEqual({
      name: 'app',
      platform: 'linux/arm64/v8',
      size: '8G',
      make_default: true,
    });
    expect(commonPullParams({})).toEqual({});
    expect(() => commonPullParams({ platform: 'amd64' })).toThrow(/--platform amd64: use os\/arch/);
    expect(() => commonPullParams({ size: 'lots' })).toThrow(/--size lots/);
    expect(() => commonPullParams({ name: 'bad name' })).toThrow();
  });
});

describe('image show of an OCI image', () => {
  it('lists the reference, digest and run defaults; a built image shows none of them', () => {
    const base = {
      id: 'i1',
      name: 'minbase',
      kernel: 'debian-bookworm',
      kernel_version: '6.1.0',
      rootfs_path: '/s/images/minbase/rootfs.ext4',
      size_bytes: 1024,
      default: false,
      created_at: '2026-01-01T00:00:00.000Z',
      used_by: [],
    };
    const oci = renderFields(
      imageFields({
        ...base,
        source: 'oci',
        reference: '127.0.0.1:5000/minbase:bookworm',
        digest: `sha256:${'a'.repeat(64)}`,
        oci_config: { env: ['PATH=/bin', 'A=1'], working_dir: '/srv', user: '1000', cmd: ['bash', '-l'] },
      }),
    );
    expect(oci).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^reference +127\.0\.0\.1:5000\/minbase:bookworm$/),
        expect.stringMatching(/^digest +sha256:a{64}$/),
        expect.stringMatching(/^env +PATH=\/bin A=1$/),
        expect.stringMatching(/^workdir +\/srv$/),
        expect.stringMatching(/^user +1000$/),
        expect.stringMatching(/^cmd +\["bash","-l"\]$/),
      ]),
    );
    expect(oci.some((l) => l.startsWith('entrypoint'))).toBe(false);
    const built = renderFields(imageFields({ ...base, source: 'built' }));
    expect(built.some((l) => /^(reference|digest|env|workdir|user|cmd|parent) /.test(l))).toBe(false);
  });
});
