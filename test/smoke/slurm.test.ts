// Sandboxes as Slurm jobs (issue 17): `banger slurm run` against a two-node cluster on this machine
// (test/fixtures/slurm/cluster.ts: slurmctld in one network namespace, two nodes in their own
// network + UTS namespaces, each with slurmd and its own bangerd; munge with one key). The CLI
// runs in the controller's namespace and reaches the nodes only through Slurm.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OpTraceResult, Vm } from '../../generated/types.gen.ts';
import { startSlurmCluster, type SlurmCluster, type SlurmNode } from '../fixtures/slurm/cluster.ts';
import { makeTestRepo, type TestRepo } from '../helpers/git-repo.ts';
import { BIN, smokeEnv, type CmdResult } from './harness.ts';

// The smallest VM: one vCPU (a core under TCG) and the least memory the image boots in.
const MEM = '256';

let cluster: SlurmCluster;
let repo: TestRepo;

beforeAll(async () => {
  const dir = mkdtempSync('/tmp/bslurm-');
  cluster = await startSlurmCluster(dir, smokeEnv());
  repo = makeTestRepo('bslurm-repo');
  // The node's bangerd (unprivileged) reads the work tree from "shared storage": this file system.
  chmodSync(dirname(repo.dir), 0o755);
});

afterAll(async () => {
  await cluster?.stop();
  repo?.cleanup();
});

interface Job {
  output(): { stdout: string; stderr: string };
  waitFor(re: RegExp, ms: number): Promise<void>;
  done: Promise<CmdResult>;
}

/** `banger slurm run ARGS` in the controller's namespace (a submit host). */
function slurmRun(args: string[]): Job {
  const dd = args.indexOf('--');
  const flags = [
    '--node-socket',
    cluster.nodeSocket,
    '--node-bin',
    BIN('banger'),
    '--vcpu',
    '1',
    '--memory',
    MEM,
  ];
  const argv = dd === -1 ? [...args, ...flags] : [...args.slice(0, dd), ...flags, ...args.slice(dd)];
  const p = spawn('ip', ['netns', 'exec', cluster.ctlNetns, BIN('banger'), 'slurm', 'run', ...argv], {
    env: { ...cluster.env, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CmdResult>((resolve) =>
    p.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  let ended = false;
  void done.then(() => (ended = true));
  return {
    output: () => ({ stdout, stderr }),
    done,
    waitFor: async (re, ms) => {
      const end = Date.now() + ms;
      while (!re.test(stdout) && !re.test(stderr)) {
        if (ended || Date.now() > end)
          throw new Error(`${ended ? 'ended' : 'timed out'} before ${re}: ${stdout}\n${stderr}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
  };
}

interface QueuedJob {
  id: string;
  name: string;
  comment: string;
  state: string;
  node: string;
  reason: string;
}

function squeue(): QueuedJob[] {
  const r = spawnSync('ip', ['netns', 'exec', cluster.ctlNetns, 'squeue', '-h', '-o', '%i|%j|%k|%T|%N|%r'], {
    env: cluster.env,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`squeue failed: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const [id, name, comment, state, node, reason] = l.split('|');
      return { id: id!, name: name!, comment: comment!, state: state!, node: node!, reason: reason! };
    });
}

function nodeBanger(n: SlurmNode, args: string[]): CmdResult {
  const r = spawnSync('ip', ['netns', 'exec', n.netns, BIN('banger'), ...args, '--socket', n.daemon.socket], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function vmNames(n: SlurmNode): string[] {
  const r = nodeBanger(n, ['vm', 'list', '--json']);
  if (r.code !== 0) throw new Error(`vm list on ${n.name}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as Vm[]).map((v) => v.name);
}

async function until<T>(what: string, ms: number, f: () => T | undefined): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

const opOf = (j: Job): string => /; op (op-[0-9a-f]+)/.exec(j.output().stderr)?.[1] ?? '';

describe('banger slurm run on a two-node cluster', () => {
  it('slurm_three_jobs: three sandboxes at once land on the nodes as resources allow (two run, one waits); exit codes come back; scancel deletes the VM and frees the node', async () => {
    const t0 = Date.now();
    const a = slurmRun(['--name', 'sl-a', repo.dir, '--', 'sh', '-c', 'cat src/app.txt; exit 3']);
    const b = slurmRun(['--name', 'sl-b', '--', 'sh', '-c', 'echo b-started; sleep 600']);
    const c = slurmRun(['--name', 'sl-c', '--', 'sh', '-c', 'echo c-ran; exit 5']);

    // Each node has one CPU: two jobs run, on different nodes; the third waits for resources.
    const queued = await until('2 running + 1 pending jobs', 60_000, () => {
      const q = squeue();
      const running = q.filter((j) => j.state === 'RUNNING');
      return q.length === 3 && running.length === 2 && q.some((j) => j.state === 'PENDING') ? q : undefined;
    });
    const running = queued.filter((j) => j.state === 'RUNNING');
    expect(new Set(running.map((j) => j.node))).toEqual(new Set(['node1', 'node2']));
    expect(queued.find((j) => j.state === 'PENDING')!.reason).toBe('Resources');
    // The op id the CLI minted is the job's comment and name.
    for (const j of [a, b, c]) {
      const op = opOf(j);
      expect(op).toMatch(/^op-[0-9a-f]{12}$/);
      expect(queued.find((q) => q.name === `banger-${op}`)?.comment).toBe(`banger-op=${op}`);
    }

    // Cancel the long one once its command runs: its VM goes, its node is free again.
    await b.waitFor(/b-started/, 600_000);
    const bJob = squeue().find((j) => j.name === `banger-${opOf(b)}`)!;
    const bNode = cluster.nodes.find((n) => n.name === bJob.node)!;
    expect(vmNames(bNode)).toContain('sl-b');
    const tCancel = Date.now();
    spawnSync('ip', ['netns', 'exec', cluster.ctlNetns, 'scancel', bJob.id], { env: cluster.env });
    const rb = await b.done;
    const cancelMs = Date.now() - tCancel;
    expect(rb.code).toBe(143);
    expect(rb.stdout).toBe('b-started\n');
    expect(rb.stderr).toMatch(/deleting sl-b \(--rm\)/);
    expect(vmNames(bNode)).not.toContain('sl-b');
    // Deleted on SIGTERM, well within KillWait (30 s), and without the 10 s a clean guest shutdown
    // may take (vm run --rm kills the VMM first: the disk goes anyway).
    expect(cancelMs).toBeLessThan(10_000);
    await until(`job ${bJob.id} gone from the queue`, 30_000, () =>
      squeue().some((j) => j.id === bJob.id) ? undefined : true,
    );

    const ra = await a.done;
    expect(ra.stdout).toBe('app v2\n');
    expect(ra.code).toBe(3);
    const rc = await c.done;
    expect(rc.stdout).toBe('c-ran\n');
    expect(rc.code).toBe(5);
    expect(ra.stderr).toMatch(/slurm: job \d+ on node[12] /);

    // Nothing left: empty queue, idle nodes, no VMs.
    await until('an empty queue', 30_000, () => (squeue().length === 0 ? true : undefined));
    for (const n of cluster.nodes) expect(vmNames(n)).toEqual([]);

    // The node that ran sl-a finds it by the op id in the job's comment.
    const aNode = cluster.nodes.find((n) => new RegExp(`slurm: job \\d+ on ${n.name} `).test(ra.stderr))!;
    const trace = nodeBanger(aNode, ['op', 'trace', opOf(a), '--json']);
    expect(trace.code).toBe(0);
    const t = JSON.parse(trace.stdout) as OpTraceResult;
    expect(t.summary).toMatchObject({ kind: 'vm.create', state: 'succeeded', vm: 'sl-a' });
    // The whole sandbox under one id: its workspace copy and its delete too.
    expect(trace.stdout).toMatch(/"vm\.workspace\.prepare"/);
    expect(trace.stdout).toMatch(/"vm\.delete"/);
    process.stderr.write(
      `slurm_three_jobs: ${Math.round((Date.now() - t0) / 1000)} s, scancel → VM deleted in ${cancelMs} ms\n`,
    );
  });
});
