// Start-up sweeps: proxy sockets whose VM is gone (deleted across a daemon crash), and the one
// loop under every egress sweep.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sweepDir, sweepProxySockets } from '../../src/egress/sweep.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bgpx');
afterAll(() => tmp.cleanup());

describe('sweepProxySockets', () => {
  it("removes the sockets of VMs without a row, keeps live VMs' and anything not a VM socket", async () => {
    const dir = join(tmp.dir, 'px');
    mkdirSync(dir);
    // A real unix socket left by a dead listener, as a crash leaves it.
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(dir, 'aaaaaaaaaaaa.sock'), r));
    await new Promise<void>((r) => server.close(() => r()));
    writeFileSync(join(dir, 'aaaaaaaaaaaa.sock'), '');
    for (const n of ['bbbbbbbbbbbb.sock', 'warm-0123456789ab.sock', 'notes.txt', 'ABCDEFABCDEF.sock'])
      writeFileSync(join(dir, n), '');
    const removed = await sweepProxySockets(dir, (id) => id === 'bbbbbbbbbbbb');
    expect(removed).toEqual(['aaaaaaaaaaaa.sock']);
    expect(readdirSync(dir).sort()).toEqual([
      'ABCDEFABCDEF.sock',
      'bbbbbbbbbbbb.sock',
      'notes.txt',
      'warm-0123456789ab.sock',
    ]);
    expect(await sweepProxySockets(join(tmp.dir, 'missing'), () => false)).toEqual([]);
  });
});

describe('sweepDir', () => {
  it('removes the names it picks, directories whole, and nothing else', async () => {
    const dir = join(tmp.dir, 'egress');
    mkdirSync(join(dir, '.ca-1234', 'inner'), { recursive: true });
    writeFileSync(join(dir, '.ca-1234', 'inner', 'key.pem'), 'private');
    for (const n of ['placeholder.key.tmp-77', 'placeholder.key', 'ca.pem']) writeFileSync(join(dir, n), '');
    const removed = await sweepDir(dir, (n) => n.startsWith('.ca-') || n.startsWith('placeholder.key.tmp-'));
    expect(removed.sort()).toEqual(['.ca-1234', 'placeholder.key.tmp-77']);
    expect(readdirSync(dir).sort()).toEqual(['ca.pem', 'placeholder.key']);
    expect(await sweepDir(join(tmp.dir, 'nowhere'), () => true)).toEqual([]);
  });
});
