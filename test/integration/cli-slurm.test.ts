// bin/banger slurm run as a user runs it, with a fake srun on PATH: flags become the job's
// resources and the node's vm run flags, the exit code is srun's, --dry-run submits nothing. And
// the node's side against a fake daemon: vm run adopts BANGER_OP_ID, and Slurm's SIGTERM during
// the create cancels it. Needs `npm run build` first.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortTempDir } from '../helpers/tmp.ts';
import { startFakeDaemon, type FakeDaemon } from './cli-fake-daemon.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BANGER = join(ROOT, 'bin', 'banger');
const built = existsSync(join(ROOT, 'dist/src/cli/commands/slurm/run.js'));

describe.skipIf(!built)('banger slurm run with a fake srun', () => {
  const tmp = shortTempDir('bgslcli');
  afterAll(() => tmp.cleanup());
  const srun = join(tmp.dir, 'srun');
  writeFileSync(srun, `#!/bin/sh\nprintf '%s\\n' "$@" > "$0.argv"\nexit 7\n`);
  chmodSync(srun, 0o755);
  const run = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(BANGER, ['slurm', 'run', ...args], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${tmp.dir}:${process.env.PATH ?? ''}`, NO_COLOR: '1' },
      input: '',
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('submits the VM’s resources and passes vm run’s flags, PATH (absolute) and command to the node', () => {
    const r = run([
      '-p',
      'gpu',
      '--vcpu',
      '2',
      '--memory',
      '1G',
      '--name',
      'box',
      '--cold',
      '.',
      '--',
      'make',
      'test',
    ]);
    expect(r.code).toBe(7);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /^slurm: submitting banger-op-[0-9a-f]{12}: 2 CPU, 1228 MiB \(1024 MiB guest \+ 204 MiB VMM\) in partition gpu; op op-[0-9a-f]{12}\n$/,
    );
    const argv = readFileSync(`${srun}.argv`, 'utf8').split('\n');
    expect(argv).toContain('--cpus-per-task=2');
    expect(argv).toContain('--mem=1228M');
    expect(argv).toContain('--partition=gpu');
    const line = argv[argv.indexOf('-c') + 1]!;
    expect(line).toContain(
      `exec banger vm run --rm --socket /run/banger/bangerd.sock --vcpu 2 --memory 1024 --name box --cold ${process.cwd()} -- make test`,
    );
  });

  it('--dry-run --json: the argv and the reservation; nothing submitted', () => {
    const r = run(['--dry-run', '--json', '--vcpu', '1', '--memory', '300', '--', 'true']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as {
      op_id: string;
      job_name: string;
      cpus_per_task: number;
      mem_mib: number;
      argv: string[];
    };
    expect(j).toMatchObject({ dry_run: true, cpus_per_task: 1, mem_mib: 504, job_name: `banger-${j.op_id}` });
    expect(j.argv[0]).toBe('srun');
  });

  it('refuses --json without --dry-run, and --mode without PATH', () => {
    expect(run(['--json', '--', 'true']).code).not.toBe(0);
    const r = run(['--mode', 'full_copy', '--', 'true']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--include-untracked and --mode apply to a PATH/);
  });
});

describe.skipIf(!built)('the node’s vm run under Slurm (a fake daemon)', { timeout: 60_000 }, () => {
  const tmp = shortTempDir('bgslvm');
  let d: FakeDaemon;
  beforeAll(async () => {
    d = await startFakeDaemon(tmp.dir);
  });
  afterAll(async () => {
    await d.close();
    tmp.cleanup();
  });

  it('SIGTERM (scancel) during the create cancels it and exits 143; the create is BANGER_OP_ID’s op', async () => {
    const OP = 'op-0123456789ab';
    let sent = false;
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const p = spawn(
        BANGER,
        ['vm', 'run', '--socket', d.sock, '--name', 'slow-term', '--rm', '--', 'true'],
        {
          env: { ...process.env, NO_COLOR: '1', BANGER_OP_ID: OP },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stderr = '';
      p.stderr.on('data', (b: Buffer) => {
        stderr += b.toString();
        if (!sent && stderr.includes('wait_ssh started')) {
          sent = true;
          p.kill('SIGTERM');
        }
      });
      const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
      p.on('close', (code) => {
        clearTimeout(t);
        resolve({ code, stderr });
      });
    });
    expect(sent).toBe(true);
    expect(r.code).toBe(143);
    expect(d.calls.some((c) => c.method === 'vm.create.cancel')).toBe(true);
    expect(r.stderr).toMatch(
      new RegExp(`^create of slow-term canceled on SIGTERM; what it had done was undone \\(${OP}\\)$`, 'm'),
    );
    expect(d.vms.has('slow-term')).toBe(false);
  });
});
