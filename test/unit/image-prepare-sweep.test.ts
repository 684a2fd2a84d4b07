import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sweepPrepareTmp } from '../../src/image/prepare.ts';

// A daemon killed mid-prepare leaves $TMPDIR/banger-prep-* (QEMU pidfile + QMP socket) behind.
describe('sweepPrepareTmp', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  function scratch(): string {
    const d = mkdtempSync(join(tmpdir(), 'prep-sweep-'));
    dirs.push(d);
    return d;
  }

  it('removes dirs whose QEMU is gone, keeps live ones, young pidless ones and others', async () => {
    const root = scratch();
    const uid = process.getuid?.() ?? 0;
    const dead = join(root, 'banger-prep-dead');
    mkdirSync(dead);
    writeFileSync(join(dead, 'qemu.pid'), '999999999\n');
    const oldNoPid = join(root, 'banger-prep-old');
    mkdirSync(oldNoPid);
    const past = new Date(Date.now() - 5 * 60_000);
    utimesSync(oldNoPid, past, past);
    const young = join(root, 'banger-prep-young');
    mkdirSync(young);
    const child = spawn('sleep', ['30']);
    const live = join(root, 'banger-prep-live');
    mkdirSync(live);
    writeFileSync(join(live, 'qemu.pid'), `${child.pid}\n`);
    const other = join(root, 'not-ours');
    mkdirSync(other);
    try {
      // Another uid's dirs are never touched (checked while there is something to remove).
      expect(await sweepPrepareTmp(root, uid + 12345)).toEqual([]);
      expect(existsSync(dead) && existsSync(oldNoPid)).toBe(true);
      const removed = await sweepPrepareTmp(root, uid);
      expect(removed.sort()).toEqual([dead, oldNoPid].sort());
      expect(existsSync(live)).toBe(true);
      expect(existsSync(young)).toBe(true);
      expect(existsSync(other)).toBe(true);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
