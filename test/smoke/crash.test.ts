// The crash harness (issue 12): for every named step of cold create, warm create, image warm,
// start, stop and delete, a daemon started with BANGER_TEST_CRASH_AT=<step> SIGKILLs itself when
// that step begins; a normal daemon is started again, and the invariants are checked on the real
// world, not on banger's word:
//   - no VMM whose argv names the state dir runs unless banger lists its VM live;
//   - nothing is left on disk (VM directories, unfinished templates) for a VM banger does not list;
//   - no tap is left for a VM banger does not list;
//   - every VM listed running passes `vm health` and answers `hostname` with its own name;
// and at the end everything can be deleted, after which no VMM of the state dir runs.
// Scenario ids: crash_cold_create, crash_warm_create, crash_image_warm, crash_start_stop,
// crash_pause_resume, crash_fork, crash_delete (`npm run smoke -- -t crash_`).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Operation, OpSummary, Vm } from '../../generated/types.gen.ts';
import { findStateDirVmms } from '../../src/vm/orphans.ts';
import { LIVE_STATES } from '../../src/vm/states.ts';
import { banger, bangerJson, inNetns, restartSmokeDaemon, smokeEnv, uniqueName, vmDirs } from './harness.ts';

// A spec no other smoke file uses, so its template is this file's own.
const MEM = ['--memory', '576'];
const LIVE = new Set<string>(LIVE_STATES);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Start a daemon that crashes at `point`, run `action` against it (it fails when the daemon
 * dies), wait for the crash, then start a normal daemon (which reconciles).
 */
async function crashAt(point: string, action: () => Promise<unknown>, waitMs = 240_000): Promise<void> {
  const env = await restartSmokeDaemon({ BANGER_TEST_CRASH_AT: point });
  const pid = env.daemonPid;
  let finished = false;
  const act = action()
    .catch(() => undefined)
    .finally(() => (finished = true));
  // The action ends when the daemon dies under it; if it ends with the daemon alive, the crash
  // point was never reached: say so at once instead of waiting out the timeout.
  const end = Date.now() + waitMs;
  while (alive(pid)) {
    if (finished) {
      await new Promise((r) => setTimeout(r, 3000));
      if (alive(pid))
        throw new Error(`${point}: the action finished but the daemon never reached the crash point`);
    }
    if (Date.now() > end)
      throw new Error(`${point}: the daemon (pid ${pid}) did not crash within ${waitMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await act;
  // The crashed daemon's socket file is left behind: the next daemon replaces it.
  await restartSmokeDaemon();
}

/** The invariants above, after a crash at `point`. */
async function invariants(point: string): Promise<Vm[]> {
  const env = smokeEnv();
  const vms = await bangerJson<Vm[]>(['vm', 'list']);
  const byId = new Map(vms.map((v) => [v.id, v]));
  const uid = env.daemonUser?.uid ?? 0;
  for (const p of findStateDirVmms(env.stateDir, uid)) {
    const id = /\/vms\/([^/]+)$/.exec(p.dir)?.[1];
    const vm = id ? byId.get(id) : undefined;
    expect(
      vm && LIVE.has(vm.state),
      `${point}: VMM ${p.pid} (${p.dir}) runs but banger lists ${vm ? `${vm.name} ${vm.state}` : 'no VM'}`,
    ).toBe(true);
  }
  expect(vmDirs(), `${point}: VM directories`).toEqual(vms.map((v) => v.id).sort());
  // Every template directory is a finished template (an interrupted build is removed).
  const images = join(env.stateDir, 'images');
  for (const img of existsSync(images) ? readdirSync(images) : []) {
    const warm = join(images, img, 'warm');
    for (const t of existsSync(warm) ? readdirSync(warm) : []) {
      expect(existsSync(join(warm, t, 'template.json')), `${point}: unfinished template ${t}`).toBe(true);
    }
  }
  const links = await inNetns(env.netns, ['ip', '-o', 'link', 'show']);
  const taps = [...links.stdout.matchAll(/^\d+: (bgt[^:@ ]*)/gm)].map((m) => m[1]!);
  const bridged = new Set(vms.filter((v) => v.network.mode === 'bridge').map((v) => v.id));
  for (const tap of taps)
    expect(
      [...bridged].some((id) => tap.endsWith(id)),
      `${point}: stray tap ${tap}`,
    ).toBe(true);
  for (const v of vms.filter((x) => x.state === 'running')) {
    const h = await bangerJson<{ ssh_ready: boolean }>(['vm', 'health', v.name]);
    expect(h.ssh_ready, `${point}: ${v.name} health`).toBe(true);
    const r = await banger(['vm', 'ssh', v.name, '--', 'hostname'], { timeoutMs: 60_000 });
    expect(r.stdout.trim(), `${point}: ${v.name} answers as itself (${r.stderr})`).toBe(v.name);
  }
  return vms;
}

async function createOp(vmName: string): Promise<OpSummary | undefined> {
  const ops = await bangerJson<OpSummary[]>(['op', 'list', '--method', 'vm.create.begin', '--vm', vmName]);
  return ops[0];
}

const made: string[] = [];
afterAll(async () => {
  for (const n of made) await banger(['vm', 'delete', n]);
  const env = smokeEnv();
  // After deleting everything this file made, none of its VMMs runs.
  const left = findStateDirVmms(env.stateDir, env.daemonUser?.uid ?? 0).filter((p) =>
    made.some((n) => p.argv.join(' ').includes(`guest=${n}`)),
  );
  expect(left).toEqual([]);
});

describe('crash consistency on real VMs', () => {
  it('crash_cold_create: a crash at any step of a cold create is undone after the restart', async () => {
    for (const step of ['resolve_image', 'record', 'network', 'prepare_disk', 'seed', 'boot', 'wait_ready']) {
      const name = uniqueName(`cc-${step.replace('_', '')}`.slice(0, 12));
      // Bridged, so the network step (tap, NAT) is one of them.
      await crashAt(`vm.create.${step}`, () =>
        banger(['vm', 'create', '--name', name, '--cold', '--network', 'bridge', ...MEM]),
      );
      const vms = await invariants(`vm.create.${step}`);
      expect(
        vms.map((v) => v.name),
        `vm.create.${step}: the undone VM is gone`,
      ).not.toContain(name);
      const op = await createOp(name);
      expect(op?.state, `vm.create.${step}: its op`).toBe('failed');
      expect(op?.message).toMatch(/interrupted by a daemon restart/);
    }
  });

  it('crash_image_warm: a crash at any stage of a template build leaves no VMM and no files; then it builds', async () => {
    for (const stage of ['prepare', 'boot', 'settle', 'save']) {
      await crashAt(`image.warm.${stage}`, () =>
        banger(['image', 'warm', ...MEM, '--network', 'user'], { timeoutMs: 600_000 }),
      );
      await invariants(`image.warm.${stage}`);
    }
    const r = await bangerJson<{ operation: Operation }>(['image', 'warm', ...MEM, '--network', 'user'], {
      timeoutMs: 600_000,
    });
    expect(r.operation.state).toBe('succeeded');
  });

  it('crash_warm_create: a crash at any step of a warm create is undone, never a clone with the template identity', async () => {
    for (const step of ['warm', 'record', 'prepare_disk', 'seed', 'restore', 'reidentify', 'wait_ready']) {
      const name = uniqueName(`cw-${step.replace('_', '')}`.slice(0, 12));
      await crashAt(`vm.create.${step}`, () =>
        banger(['vm', 'create', '--name', name, '--network', 'user', ...MEM]),
      );
      const vms = await invariants(`vm.create.${step} (warm)`);
      expect(vms.map((v) => v.name)).not.toContain(name);
    }
    // And a warm create after all that works, as itself.
    const name = uniqueName('cw-ok');
    made.push(name);
    const r = await bangerJson<{ vm: Vm }>(['vm', 'create', '--name', name, '--network', 'user', ...MEM]);
    expect(r.vm.warm_template).toMatch(/^[0-9a-f]{16}$/);
    await invariants('after warm crashes');
  });

  it('crash_start_stop: an interrupted start or stop ends stopped; the VM then starts and stops normally', async () => {
    const name = uniqueName('css');
    made.push(name);
    await bangerJson(['vm', 'create', '--name', name, '--no-start', '--network', 'user', ...MEM]);
    for (const step of ['network', 'boot', 'wait_ready']) {
      await crashAt(`vm.start.${step}`, () => banger(['vm', 'start', name]));
      const vms = await invariants(`vm.start.${step}`);
      const vm = vms.find((v) => v.name === name);
      expect(vm?.state, `vm.start.${step}`).toBe('stopped');
      if (step !== 'network') expect(vm?.state_reason).toBe('start interrupted by a daemon restart');
    }
    expect((await banger(['vm', 'start', name])).code).toBe(0);
    await invariants('started');
    await crashAt('vm.stop.shutdown', () => banger(['vm', 'stop', name]));
    const vms = await invariants('vm.stop.shutdown');
    expect(vms.find((v) => v.name === name)).toMatchObject({
      state: 'stopped',
      state_reason: 'stop interrupted by a daemon restart',
    });
    // A stopped VM's health says so: no kernel, no ssh (its console still shows the last boot).
    const h = await banger(['vm', 'health', name, '--json']);
    expect(h.code).toBe(1);
    expect(JSON.parse(h.stdout)).toMatchObject({ state: 'stopped', kernel_up: false, ssh_ready: false });
  });

  it('crash_pause_resume: a crash at any step of a pause or a resume leaves the VM running or paused to disk, never half', async () => {
    const name = uniqueName('cpr');
    made.push(name);
    await bangerJson(['vm', 'create', '--name', name, '--cold', '--network', 'user', ...MEM], {
      timeoutMs: 600_000,
    });
    // A file only in the guest's RAM: whatever the crash, the VM that comes back still has it.
    const marker = async (why: string): Promise<void> => {
      const r = await banger(['vm', 'ssh', name, '--', 'cat', '/run/banger-crash-marker'], {
        timeoutMs: 60_000,
      });
      expect(r.stdout.trim(), `${why}: the guest's RAM survived (${r.stderr})`).toBe('in-ram');
    };
    const r0 = await banger(['vm', 'ssh', name, '--', 'sh', '-c', 'echo in-ram > /run/banger-crash-marker']);
    expect(r0.code).toBe(0);
    const state = async (point: string): Promise<Vm> => {
      const vms = await invariants(point);
      const vm = vms.find((v) => v.name === name);
      expect(vm, point).toBeDefined();
      return vm!;
    };
    // Pause: before the commit the guest continues (running); after it the VM is paused to disk.
    // (copy_ram and fill_ram: the RAM file's copy of a pause and a resume: the VM's RAM is a
    // file on /dev/shm, so its saves are format ram-file.)
    for (const [step, want] of [
      ['save', 'running'],
      ['copy_ram', 'running'],
      ['commit', 'running'],
      ['exit', 'paused'],
      ['record', 'paused'],
    ] as const) {
      await crashAt(`vm.pause.${step}`, () => banger(['vm', 'pause', name]));
      const vm = await state(`vm.pause.${step}`);
      expect(vm.state, `vm.pause.${step}`).toBe(want);
      if (want === 'paused') {
        expect(vm.saved_bytes, `vm.pause.${step}`).toBeGreaterThan(0);
        expect((await banger(['vm', 'resume', name], { timeoutMs: 300_000 })).code).toBe(0);
      }
      await marker(`vm.pause.${step}`);
    }
    // Resume: until the save is consumed the VM is paused again (the guest never ran); after,
    // the loaded guest is continued. (A crash point fires before its step: at `consume` the
    // state is loaded but the save is still there.)
    for (const [step, want] of [
      ['network', 'paused'],
      ['boot', 'paused'],
      ['fill_ram', 'paused'],
      ['load', 'paused'],
      ['consume', 'paused'],
      ['cont', 'running'],
      ['wait_ready', 'running'],
    ] as const) {
      const p = await state(`before vm.resume.${step}`);
      if (p.state !== 'paused')
        expect((await banger(['vm', 'pause', name], { timeoutMs: 300_000 })).code).toBe(0);
      await crashAt(`vm.resume.${step}`, () => banger(['vm', 'resume', name], { timeoutMs: 300_000 }));
      const vm = await state(`vm.resume.${step}`);
      expect(vm.state, `vm.resume.${step}`).toBe(want);
      if (want === 'running') await marker(`vm.resume.${step}`);
    }
    // vm stop of a paused VM crashing before its save is discarded: still paused, resumable.
    expect((await banger(['vm', 'pause', name], { timeoutMs: 300_000 })).code).toBe(0);
    await crashAt('vm.stop.discard', () => banger(['vm', 'stop', name]));
    expect((await state('vm.stop.discard')).state).toBe('paused');
    expect((await banger(['vm', 'resume', name], { timeoutMs: 300_000 })).code).toBe(0);
    await marker('after vm.stop.discard');
  });

  it('crash_fork: a crash at any step of a fork leaves the source running (its RAM and disk whole) and no fork half-made', async () => {
    const name = uniqueName('cfk');
    made.push(name);
    await bangerJson(['vm', 'create', '--name', name, '--cold', '--network', 'user', ...MEM], {
      timeoutMs: 600_000,
    });
    const put = await banger(['vm', 'ssh', name, '--', 'sh', '-c', 'echo in-ram > /run/banger-crash-marker']);
    expect(put.code).toBe(0);
    for (const step of [
      'prepare',
      'pause_source',
      'freeze_disk',
      'resume_source',
      'save',
      'start_children',
    ]) {
      const kid = `${name}-k-${step.replaceAll('_', '-')}`;
      await crashAt(`vm.fork.${step}`, () =>
        banger(['vm', 'fork', name, '--name', kid], { timeoutMs: 300_000 }),
      );
      const vms = await invariants(`vm.fork.${step}`);
      // The child of an interrupted fork is undone; the source is running, with its RAM.
      expect(
        vms.find((v) => v.name === kid),
        `vm.fork.${step}: child undone`,
      ).toBeUndefined();
      expect(vms.find((v) => v.name === name)?.state, `vm.fork.${step}: source`).toBe('running');
      const r = await banger(['vm', 'ssh', name, '--', 'cat', '/run/banger-crash-marker'], {
        timeoutMs: 60_000,
      });
      expect(r.stdout.trim(), `vm.fork.${step}: the source's RAM (${r.stderr})`).toBe('in-ram');
      // Its disk writable and whole (whichever overlay it ended on).
      const w = await banger([
        'vm',
        'ssh',
        name,
        '--',
        'sh',
        '-c',
        `echo ${step} > /root/after && sync && cat /root/after`,
      ]);
      expect(w.stdout.trim(), `vm.fork.${step}: the source's disk`).toBe(step);
    }
    // The source still forks, after all that, and goes on after a stop and start.
    const ok = await banger(['vm', 'fork', name, '--name', `${name}-k-ok`], { timeoutMs: 600_000 });
    made.push(`${name}-k-ok`);
    expect(ok.code, ok.stderr).toBe(0);
    await invariants('after crash_fork');
  });

  it('crash_delete: a crash at any step of a delete is finished by the restart (or leaves the VM whole)', async () => {
    for (const step of ['stop', 'network', 'files', 'record']) {
      const name = uniqueName(`cd-${step}`);
      await bangerJson(['vm', 'create', '--name', name, '--no-start', ...MEM]);
      await crashAt(`vm.delete.${step}`, () => banger(['vm', 'delete', name]));
      const vms = await invariants(`vm.delete.${step}`);
      const vm = vms.find((v) => v.name === name);
      if (step === 'stop') {
        // Nothing was done yet: the VM is as it was, and deletes normally.
        expect(vm?.state).toBe('stopped');
        expect((await banger(['vm', 'delete', name])).code).toBe(0);
      } else {
        expect(vm, `vm.delete.${step}: finished`).toBeUndefined();
      }
    }
  });
});
