// `banger slurm run` (src/slurm/*): the srun argv, the node's command run through a real sh by a
// fake srun (argv, env and exit code as Slurm would pass them), scancel on a signal; and vm run's
// side of it: BANGER_OP_ID, and a create that a SIGTERM cancels (watchOperation's abort).
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Operation } from '../../generated/types.gen.ts';
import { watchOperation } from '../../src/cli/progress.ts';
import {
  jobMemoryMib,
  nodeArgv,
  srunArgv,
  VMM_OVERHEAD_MIB,
  type SlurmJobSpec,
} from '../../src/slurm/job.ts';
import { opIdFromEnv } from '../../src/slurm/op-env.ts';
import { scancelArgv, submitJob } from '../../src/slurm/submit.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const OP = 'op-0123456789ab';

function spec(over: Partial<SlurmJobSpec> = {}): SlurmJobSpec {
  return {
    opId: OP,
    vcpus: 1,
    memoryMib: 512,
    vmRunFlags: [],
    command: ['sh', '-c', 'echo "it\'s $HOME"; exit 3'],
    nodeSocket: '/run/banger/bangerd.sock',
    nodeBin: 'banger',
    pty: false,
    ...over,
  };
}

const tmp = shortTempDir('bgslurm');
afterAll(() => tmp.cleanup());

/** A script on a fake PATH. */
function fake(name: string, body: string): void {
  const p = join(tmp.dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
}

// srun: record argv (one per line) and BANGER_OP_ID, then run the task after the options as slurmd
// would, with SLURM_JOB_ID set; its exit code is srun's.
fake(
  'srun',
  `printf '%s\\n' "$@" > "$0.argv"; printf '%s' "$BANGER_OP_ID" > "$0.op"
while [ $# -gt 0 ]; do case $1 in --export=ALL,*) export "\${1#--export=ALL,}"; shift ;; --*) shift ;; *) break ;; esac; done
SLURM_JOB_ID=42 exec "$@"`,
);
// The node's banger: record what it was asked to run, exit as the guest command would.
fake('banger', `printf '%s\\n' "$@" > "$0.argv"; printf '%s' "$BANGER_OP_ID" > "$0.op"; exit 3`);
const PATH_ENV = { ...process.env, PATH: `${tmp.dir}:${process.env.PATH ?? ''}` };
const lines = (f: string): string[] => readFileSync(join(tmp.dir, f), 'utf8').split('\n').slice(0, -1);

describe('the Slurm job', () => {
  it('asks for the VM’s resources: vCPUs, guest memory + the VMM’s overhead; the op id in name and comment', () => {
    expect(VMM_OVERHEAD_MIB).toBe(204);
    expect(jobMemoryMib(512)).toBe(716);
    const argv = srunArgv(spec({ partition: 'sandboxes', time: '10' }));
    expect(argv.slice(0, 10)).toEqual([
      'srun',
      `--job-name=banger-${OP}`,
      `--comment=banger-op=${OP}`,
      '--ntasks=1',
      '--nodes=1',
      '--cpus-per-task=1',
      '--mem=716M',
      `--export=ALL,BANGER_OP_ID=${OP}`,
      '--partition=sandboxes',
      '--time=10',
    ]);
    expect(argv[10]).toBe('sh');
    expect(srunArgv(spec({ pty: true, command: [] }))).toContain('--pty');
    expect(srunArgv(spec())).not.toContain('--pty');
  });

  it('runs banger vm run --rm against the node’s bangerd with the flags, PATH and command', () => {
    expect(
      nodeArgv(
        spec({ vcpus: 2, memoryMib: 1024, vmRunFlags: ['--name', 'box', '--cold'], path: '/nfs/app' }),
      ),
    ).toEqual([
      'banger',
      'vm',
      'run',
      '--rm',
      '--socket',
      '/run/banger/bangerd.sock',
      '--vcpu',
      '2',
      '--memory',
      '1024',
      '--name',
      'box',
      '--cold',
      '/nfs/app',
      '--',
      'sh',
      '-c',
      'echo "it\'s $HOME"; exit 3',
    ]);
    expect(nodeArgv(spec({ command: [] })).at(-1)).toBe('512');
  });

  it('through a fake srun: the node’s banger gets each argument intact and the op id; its exit code comes back', async () => {
    const out = await submitJob(
      spec({ nodeBin: join(tmp.dir, 'banger'), vmRunFlags: ['--name', 'it s'], path: '/nfs/a b' }),
      { env: PATH_ENV },
    );
    expect(out).toEqual({ code: 3 });
    expect(lines('srun.argv')[0]).toBe(`--job-name=banger-${OP}`);
    // srun's own environment does not carry it; the job's (--export) does.
    expect(readFileSync(join(tmp.dir, 'srun.op'), 'utf8')).toBe('');
    expect(readFileSync(join(tmp.dir, 'banger.op'), 'utf8')).toBe(OP);
    expect(lines('banger.argv')).toEqual([
      'vm',
      'run',
      '--rm',
      '--socket',
      '/run/banger/bangerd.sock',
      '--vcpu',
      '1',
      '--memory',
      '512',
      '--name',
      'it s',
      '/nfs/a b',
      '--',
      'sh',
      '-c',
      'echo "it\'s $HOME"; exit 3',
    ]);
  });

  it('a signal to banger cancels the job with scancel (never signals srun itself) and exits 128+n', async () => {
    // srun waits until "canceled": the fake scancel records its argv and ends it as Slurm would.
    fake('srun', 'echo $$ > "$0.pid"; trap "exit 143" TERM; while :; do sleep 0.05; done');
    fake('scancel', `printf '%s\\n' "$@" > "$0.argv"; kill -TERM "$(cat "${join(tmp.dir, 'srun.pid')}")"`);
    const told: string[][] = [];
    const listeners = process.listenerCount('SIGTERM');
    const running = submitJob(spec(), { env: PATH_ENV, onSignal: (_sig, argv) => told.push(argv) });
    for (let i = 0; i < 100; i++) {
      try {
        readFileSync(join(tmp.dir, 'srun.pid'));
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    process.emit('SIGTERM', 'SIGTERM');
    const out = await running;
    expect(out).toEqual({ code: 143, signal: 'SIGTERM' });
    expect(told).toEqual([scancelArgv(OP)]);
    expect(lines('scancel.argv')).toEqual([`--name=banger-${OP}`]);
    expect(process.listenerCount('SIGTERM')).toBe(listeners);
  });

  it('no srun on PATH: a message that says what to install', async () => {
    await expect(submitJob(spec(), { env: { PATH: '/nonexistent' } })).rejects.toThrow(
      /srun not found: .*slurm-client/,
    );
  });
});

describe('vm run on the node', () => {
  it('takes its op id from BANGER_OP_ID only when it is a well-formed op id', () => {
    expect(opIdFromEnv({ BANGER_OP_ID: OP })).toBe(OP);
    expect(opIdFromEnv({ BANGER_OP_ID: 'op-; rm -rf /' })).toBeUndefined();
    expect(opIdFromEnv({})).toBeUndefined();
  });

  it('a SIGTERM during the create (the abort signal) cancels it as a first Ctrl-C does', async () => {
    const ac = new AbortController();
    let state: Operation['state'] = 'running';
    let cancels = 0;
    let polls = 0;
    const op = (): Operation => ({
      id: OP,
      kind: 'vm.create',
      method: 'vm.create.begin',
      state,
      started_at: new Date().toISOString(),
      steps: [],
    });
    const writes: string[] = [];
    const watched = await watchOperation(
      async () => {
        if (++polls === 3) ac.abort();
        return { operation: op() };
      },
      {
        title: 'Creating x',
        cancel: async () => {
          cancels++;
          state = 'canceled';
        },
        abort: ac.signal,
        intervalMs: 1,
        stream: { write: (s: string) => writes.push(s) },
        mode: 'plain',
      },
    );
    expect(cancels).toBe(1);
    expect(watched.interrupted).toBe(true);
    expect(watched.last.operation.state).toBe('canceled');
    expect(writes.join('')).toMatch(/canceling op-0123456789ab/);
    // Aborted before the watch starts: canceled at once, before a second poll.
    polls = 0;
    state = 'running';
    const early = new AbortController();
    early.abort();
    const w2 = await watchOperation(
      async () => {
        polls++;
        return { operation: op() };
      },
      {
        title: 'Creating y',
        cancel: async () => {
          state = 'canceled';
        },
        abort: early.signal,
        intervalMs: 1,
        mode: 'none',
      },
    );
    expect(w2.last.operation.state).toBe('canceled');
    expect(polls).toBeLessThanOrEqual(2);
  });
});
