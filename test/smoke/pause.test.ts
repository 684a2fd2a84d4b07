// Pause to disk on a real VM (issue 14): `vm pause` saves the VM (device state and RAM) in its
// directory and ends its VMM; `vm resume` brings the same VM back with its processes and tmpfs;
// a paused VM survives a daemon restart (its missing VMM is not a crash); its save is format
// ram-file (RAM on /dev/shm), and a resume without room there maps the saved RAM from disk; `vm
// stop` of a paused VM discards the save. Scenario id: vm_pause (`npm run smoke -- -t vm_pause`).
// Idle pause (docs/snapshots.md "Idle pause"): a VM created with --idle-pause-after 20s is kept
// running by an open SSH session, paused to disk once unused, stays paused by the timer across a
// daemon restart, and is resumed by `vm exec` with its tmpfs intact. Scenario id: idle_pause.
import { existsSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Vm } from '../../generated/types.gen.ts';
import { findStateDirVmms } from '../../src/vm/orphans.ts';
import {
  banger,
  bangerJson,
  daemonLogRecords,
  inNetns,
  restartSmokeDaemon,
  smokeEnv,
  uniqueName,
} from './harness.ts';

const name = uniqueName('pause');
const idleName = uniqueName('idle');

afterAll(async () => {
  await banger(['vm', 'delete', name]);
  await banger(['vm', 'delete', idleName]);
});

async function show(n: string): Promise<Vm> {
  return bangerJson<Vm>(['vm', 'show', n]);
}

async function ssh(n: string, script: string): Promise<string> {
  const r = await banger(['vm', 'ssh', n, '--', 'sh', '-c', script], { timeoutMs: 120_000 });
  expect(r.code, `ssh ${script}: ${r.stderr}`).toBe(0);
  return r.stdout.trim();
}

/** `vm pause|resume NAME --json` prints one result per name: [{ name, ok, result: { vm } }]. */
async function fanOutVm(verb: 'pause' | 'resume'): Promise<Vm> {
  const [r] = await bangerJson<{ name: string; ok: boolean; result?: { vm: Vm } }[]>(['vm', verb, name], {
    timeoutMs: 300_000,
  });
  expect(r?.ok, `vm ${verb} ${name}`).toBe(true);
  return r!.result!.vm;
}

/** The format the pause of a VM paused to disk wrote (its saved.json). */
function savedFormat(vm: Vm): string {
  return (
    (JSON.parse(readFileSync(join(vm.vm_dir, 'saved.json'), 'utf8')) as { format?: string }).format ?? 'full'
  );
}

/** The VMMs of the smoke state dir running for this VM's directory. */
function vmmsOf(vm: Vm): number[] {
  const env = smokeEnv();
  return findStateDirVmms(env.stateDir, env.daemonUser?.uid ?? 0)
    .filter((p) => p.dir === vm.vm_dir)
    .map((p) => p.pid);
}

describe('pause to disk on a real VM', () => {
  it('vm_pause: the VMM is gone while paused; resume brings back the tmpfs and the running counter; a daemon restart keeps it paused; stop discards the save', async () => {
    const created = await bangerJson<{ vm: Vm }>(['vm', 'create', '--name', name, '--network', 'user'], {
      timeoutMs: 600_000,
    });
    expect(created.vm.state).toBe('running');
    // A tmpfs (only in RAM: a cold boot would lose it) with a file and a counter loop writing it.
    await ssh(
      name,
      'mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t && echo kept-in-ram > /mnt/t/f && ' +
        '(setsid sh -c "i=0; while true; do i=\\$((i+1)); echo \\$i > /mnt/t/counter; sleep 1; done" </dev/null >/dev/null 2>&1 &) && sleep 3',
    );
    const before = Number(await ssh(name, 'cat /mnt/t/counter'));
    expect(before).toBeGreaterThan(0);
    const running = await show(name);
    expect(vmmsOf(running)).toEqual([running.pid]);

    const t0 = Date.now();
    const paused = await fanOutVm('pause');
    const pauseMs = Date.now() - t0;
    expect(paused.state).toBe('paused');
    expect(paused.saved_bytes).toBeGreaterThan(1024 * 1024);
    expect(paused.state_reason).toMatch(/^saved to disk at .*; resume with: banger vm resume /);
    expect(paused.pid).toBeUndefined();
    // The VMM process is gone: its memory is freed; the save is on disk.
    expect(vmmsOf(paused)).toEqual([]);
    expect(existsSync(join(paused.vm_dir, 'saved.state'))).toBe(true);
    expect(existsSync(join(paused.vm_dir, 'saved.json'))).toBe(true);
    // Its RAM is a file on /dev/shm (a cold boot's): the device state alone and the RAM file copied.
    expect(savedFormat(paused)).toBe('ram-file');
    expect(existsSync(join(paused.vm_dir, 'saved.ram'))).toBe(true);
    const listed = await bangerJson<Vm[]>(['vm', 'list']);
    expect(listed.find((v) => v.name === name)).toMatchObject({
      state: 'paused',
      saved_bytes: paused.saved_bytes,
    });
    // While paused: no SSH (not running), and a second pause is a conflict.
    expect((await banger(['vm', 'pause', name])).code).toBe(6);

    // A daemon restart: the paused VM's missing VMM is not a crash.
    await restartSmokeDaemon();
    const afterRestart = await show(name);
    expect(afterRestart).toMatchObject({ state: 'paused', saved_bytes: paused.saved_bytes });
    expect(afterRestart.last_exit).toBeUndefined();
    expect(vmmsOf(afterRestart)).toEqual([]);

    const t1 = Date.now();
    const resumed = await fanOutVm('resume');
    const resumeMs = Date.now() - t1;
    expect(resumed.state).toBe('running');
    expect(resumed.saved_bytes).toBeUndefined();
    expect(existsSync(join(resumed.vm_dir, 'saved.state'))).toBe(false);
    // The same guest: the tmpfs file is there, the counter loop runs on from where it was.
    expect(await ssh(name, 'cat /mnt/t/f')).toBe('kept-in-ram');
    const c1 = Number(await ssh(name, 'cat /mnt/t/counter'));
    expect(c1).toBeGreaterThanOrEqual(before);
    await new Promise((r) => setTimeout(r, 3000));
    expect(Number(await ssh(name, 'cat /mnt/t/counter'))).toBeGreaterThan(c1);
    // Same identity (no re-identification), clock corrected (within a few seconds of the host's).
    expect(await ssh(name, 'hostname')).toBe(name);
    const skew = Math.abs(Number(await ssh(name, 'date +%s')) - Date.now() / 1000);
    expect(skew).toBeLessThan(10);
    process.stderr.write(
      `vm_pause: pause ${pauseMs} ms, saved ${paused.saved_bytes} bytes, resume → running with ssh ${resumeMs} ms\n`,
    );

    // No room on /dev/shm at resume (here the user's RAM directory is a symlink, which banger
    // refuses): the VMM maps saved.ram from disk copy-on-write, and the same guest comes back.
    const again = await fanOutVm('pause');
    expect(savedFormat(again)).toBe('ram-file');
    const ramDir = `/dev/shm/banger-${smokeEnv().daemonUser?.uid ?? 0}`;
    renameSync(ramDir, `${ramDir}.away`);
    symlinkSync(`${ramDir}.away`, ramDir);
    try {
      expect((await fanOutVm('resume')).state).toBe('running');
    } finally {
      rmSync(ramDir);
      renameSync(`${ramDir}.away`, ramDir);
    }
    expect(await ssh(name, 'cat /mnt/t/f')).toBe('kept-in-ram');
    expect(existsSync(join(again.vm_dir, 'saved.ram'))).toBe(false);

    // Paused again (its RAM is no file in the directory now: the whole stream), then stopped: the
    // save is discarded, the disk kept; start boots afresh.
    const full = await fanOutVm('pause');
    expect(savedFormat(full)).toBe('full');
    expect((await banger(['vm', 'stop', name])).code).toBe(0);
    const stopped = await show(name);
    expect(stopped.state).toBe('stopped');
    expect(stopped.state_reason).toMatch(/saved state was discarded/);
    expect(existsSync(join(stopped.vm_dir, 'saved.state'))).toBe(false);
    expect(existsSync(join(stopped.vm_dir, 'saved.json'))).toBe(false);
  });

  it('idle_pause: an open SSH session keeps a VM with --idle-pause-after 20s running; unused, it is paused to disk (VMM gone, "paused (idle)"); vm exec resumes it, says so on stderr, and the tmpfs marker is intact', async () => {
    const created = await bangerJson<{ vm: Vm }>(
      ['vm', 'create', '--name', idleName, '--network', 'user', '--idle-pause-after', '20s'],
      { timeoutMs: 600_000 },
    );
    expect(created.vm.state).toBe('running');
    expect(created.vm.idle_pause_after).toBe('20s');
    // A marker only in RAM (/tmp made a tmpfs when the image has it on disk).
    const r = await banger(
      [
        'vm',
        'exec',
        idleName,
        '--',
        'sh',
        '-c',
        'mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp; echo idle-marker > /tmp/marker; findmnt -no FSTYPE /tmp',
      ],
      { timeoutMs: 120_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('tmpfs');

    // A plain ssh session (the CLI's own command line, without its vm.touch heartbeat): only the
    // daemon's host-side look at the TCP table can see it. Held for 35 s, beyond the 20 s window.
    const { argv } = await bangerJson<{ argv: string[] }>(['vm', 'ssh', idleName, '--', 'sleep', '35']);
    const held = inNetns(smokeEnv().netns, argv, { timeoutMs: 120_000 });
    await new Promise((res) => setTimeout(res, 32_000));
    const during = await show(idleName);
    expect(during.state, 'an open SSH session must keep the VM running').toBe('running');
    expect(vmmsOf(during)).toEqual([during.pid]);
    expect((await held).code).toBe(0);

    // Unused from now: paused within 20 s + a 5 s tick + the save.
    const t0 = Date.now();
    let paused = await show(idleName);
    while (paused.state !== 'paused' && Date.now() - t0 < 180_000) {
      await new Promise((res) => setTimeout(res, 1000));
      paused = await show(idleName);
    }
    const pausedAfterMs = Date.now() - t0;
    expect(paused.state).toBe('paused');
    expect(paused.idle_paused_at).toBeDefined();
    expect(paused.saved_bytes).toBeGreaterThan(1024 * 1024);
    expect(paused.pid).toBeUndefined();
    expect(vmmsOf(paused)).toEqual([]);
    const listed = await banger(['vm', 'list']);
    expect(listed.stdout).toMatch(new RegExp(`${idleName}\\s+paused \\(idle, `));
    expect((await banger(['vm', 'show', idleName])).stdout).toMatch(/paused \(idle, saved to disk/);

    expect(daemonLogRecords().some((l) => l.msg === 'vm paused: idle' && l.vm === idleName)).toBe(true);

    // Recorded, not remembered: a daemon restart keeps it paused by the timer.
    await restartSmokeDaemon();
    const afterRestart = await show(idleName);
    expect(afterRestart).toMatchObject({ state: 'paused', idle_paused_at: paused.idle_paused_at });

    // vm exec resumes it (said on stderr only) and reads the marker from the same RAM.
    const t1 = Date.now();
    const back = await banger(['vm', 'exec', idleName, '--', 'cat', '/tmp/marker'], { timeoutMs: 300_000 });
    const resumeMs = Date.now() - t1;
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toBe('idle-marker\n');
    expect(back.stderr).toContain(`resuming idle-paused VM ${idleName}…`);
    const resumed = await show(idleName);
    expect(resumed.state).toBe('running');
    expect(resumed.idle_paused_at).toBeUndefined();
    // vm touch marks it used (last_used_at moves on); vm set turns its idle pause off.
    const touched = await bangerJson<Vm>(['vm', 'touch', idleName]);
    expect(Date.parse(touched.last_used_at!)).toBeGreaterThanOrEqual(t1);
    const off = await bangerJson<Vm>(['vm', 'set', idleName, '--idle-pause-after', '0']);
    expect(off.idle_pause_after).toBeUndefined();
    expect((await banger(['vm', 'set', idleName, '--idle-pause-after', '30'])).stderr).toMatch(
      /--idle-pause-after: "30" is not a duration/,
    );
    process.stderr.write(
      `idle_pause: paused ${pausedAfterMs} ms after the session ended (window 20 s), vm exec with resume ${resumeMs} ms\n`,
    );
  });
});
