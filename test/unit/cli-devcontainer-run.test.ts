import { describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Image, VmCreatePlanResult, VmSshResult } from '../../generated/types.gen.ts';
import { parseDevcontainer } from '../../src/cli/devcontainer.ts';
import {
  defaultPulledName,
  devcontainerSteps,
  findImageByReference,
  forwardArgv,
  forwardLine,
  LifecycleError,
  pickHostPort,
  runDefaults,
  runLifecycle,
  setupScript,
  type RunInGuest,
} from '../../src/cli/devcontainer-run.ts';
import { envWord } from '../../src/cli/guest-command.ts';
import { planSteps } from '../../src/cli/run-plan.ts';

const dc = (text: string) =>
  parseDevcontainer(text, {
    path: '/r/.devcontainer.json',
    localEnv: { HOME: '/home/me' },
    localWorkspaceFolder: '/r/app',
  });

/** Runs remote lines in a local sh: what the guest's login shell would do with them. */
const localSh: RunInGuest = (line, out) =>
  new Promise((resolve) => {
    const child = spawn('sh', ['-c', line], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    const take = (d: Buffer): void => {
      buf += d.toString();
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('close', (code) => {
      for (const l of buf.split('\n').filter(Boolean)) out(l);
      resolve(code ?? 1);
    });
  });

describe('run defaults', () => {
  it('image Env < containerEnv < remoteEnv; ${containerEnv:X} resolved when banger sets X', () => {
    const d = dc(`{
      "containerEnv": { "LANG": "C.UTF-8", "APP": "/app" },
      "remoteEnv": { "P": "\${containerEnv:PATH}:\${containerEnv:APP}/bin", "H": "\${containerEnv:HOME}" },
      "containerUser": "app", "remoteUser": "dev"
    }`);
    const r = runDefaults(
      { env: ['PATH=/usr/local/bin:/usr/bin', 'LANG=en'], user: 'nobody', working_dir: '/w' },
      d,
    );
    expect(r.env.map(envWord)).toEqual([
      'PATH=/usr/local/bin:/usr/bin',
      'LANG=C.UTF-8',
      'APP=/app',
      'P=/usr/local/bin:/usr/bin:/app/bin',
      // HOME is not set by banger: the guest's shell expands it
      'H="${HOME}"',
    ]);
    expect(r.user).toBe('dev');
    expect(r.workingDir).toBe('/w');
    expect(runDefaults({ env: [], user: 'nobody' }, dc('{"containerUser": "app"}')).user).toBe('app');
    expect(runDefaults({ env: [], user: 'nobody' }, undefined).user).toBe('nobody');
    expect(runDefaults(undefined, undefined)).toEqual({ env: [] });
  });
});

describe('setupScript', () => {
  it('creates missing users (not bare uids, not root) and hands the work tree over', () => {
    expect(setupScript([undefined, 'root'], undefined, '/w')).toBeUndefined();
    const s = setupScript(['dev', 'dev', '1000', 'app:staff'], 'dev', '/workspaces/my app')!;
    expect(s).toContain('useradd -m -s "$s" dev\n');
    expect(s).toContain('getent group staff >/dev/null 2>&1 || groupadd staff');
    expect(s).toContain('useradd -m -s "$s" app');
    expect(s).not.toContain('useradd -m -s "$s" 1000');
    expect(s.match(/useradd -m/g)).toHaveLength(2);
    expect(s.endsWith("chown -R dev: '/workspaces/my app'")).toBe(true);
    expect(setupScript([], '1000:1000', '/w')).toBe('set -e\nchown -R 1000:1000 /w');
    expect(setupScript([], '1000', '/w')).toBe('set -e\nchown -R 1000 /w');
    // valid sh
    execFileSync('sh', ['-n', '-c', s]);
  });
});

describe('runLifecycle', () => {
  it('runs each form in order with env and cwd, streams prefixed output, named ones in parallel', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'banger-lc '));
    const d = dc(`{
      "onCreateCommand": "echo \\"$GREETING from $(pwd)\\"",
      "postCreateCommand": { "a": ["sh", "-c", "sleep 0.3; echo a done"], "b": ["printf", "%s\\\\n", "it's b"] },
      "postStartCommand": ["sh", "-c", "echo start >&2"],
      "containerEnv": { "GREETING": "hello 'world'" }
    }`);
    const lines: string[] = [];
    const t0 = Date.now();
    await runLifecycle(d.lifecycle, {
      run: localSh,
      out: (l) => lines.push(l),
      cwd,
      env: runDefaults(undefined, d).env,
    });
    expect(lines).toContain(`[onCreateCommand] hello 'world' from ${cwd}`);
    expect(lines).toContain('[postCreateCommand:a] a done');
    expect(lines).toContain("[postCreateCommand:b] it's b");
    expect(lines).toContain('[postStartCommand] start');
    expect(lines[0]).toBe(`[onCreateCommand] $ echo "$GREETING from $(pwd)"`);
    // b was not held up by a: it ended before a's output
    expect(lines.indexOf("[postCreateCommand:b] it's b")).toBeLessThan(
      lines.indexOf('[postCreateCommand:a] a done'),
    );
    expect(lines.indexOf('[postCreateCommand:a] a done')).toBeLessThan(
      lines.indexOf('[postStartCommand] start'),
    );
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  it('a failing command fails the run with its exit code after its step; later steps do not run', async () => {
    const d = dc(`{
      "postCreateCommand": { "ok": "true", "bad": "echo boom; exit 7" },
      "postStartCommand": "echo never"
    }`);
    const lines: string[] = [];
    const e = await runLifecycle(d.lifecycle, { run: localSh, out: (l) => lines.push(l), env: [] }).catch(
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(LifecycleError);
    expect((e as LifecycleError).exitCode).toBe(7);
    expect((e as LifecycleError).message).toBe(
      'postCreateCommand (bad) failed with exit code 7; its output is above',
    );
    expect(lines).toContain('[postCreateCommand:bad] boom');
    expect(lines.some((l) => l.includes('never'))).toBe(false);
  });
});

describe('images and ports', () => {
  const img = (name: string, reference?: string): Image =>
    ({ name, ...(reference !== undefined ? { reference } : {}) }) as Image;

  it('finds a pulled image by its canonical reference', () => {
    const images = [
      img('debian-bookworm'),
      img('py', 'docker.io/library/python:3.12'),
      img('mb', '127.0.0.1:5000/minbase:bookworm'),
    ];
    expect(findImageByReference(images, 'python:3.12')?.name).toBe('py');
    expect(findImageByReference(images, 'docker.io/library/python:3.12')?.name).toBe('py');
    expect(findImageByReference(images, '127.0.0.1:5000/minbase:bookworm')?.name).toBe('mb');
    expect(findImageByReference(images, 'python:3.13')).toBeUndefined();
    expect(findImageByReference(images, 'debian-bookworm')).toBeUndefined();
  });

  it('default pulled names follow the contract', () => {
    expect(defaultPulledName('127.0.0.1:5000/test/minbase:bookworm')).toBe('minbase-bookworm');
    expect(defaultPulledName('python')).toBe('python-latest');
    expect(defaultPulledName(`alpine@sha256:${'ab'.repeat(32)}`)).toBe('alpine-abababababab');
    // The daemon's rule: the built default image's name is left to it.
    expect(defaultPulledName('debian:bookworm')).toBe('debian-bookworm-oci');
    expect(defaultPulledName('Not A Reference!')).toBe('Not A Reference!');
  });

  it('forwards with ssh -L on 127.0.0.1, failing when the bind fails', () => {
    const details: VmSshResult = {
      name: 'v',
      host: '127.0.0.1',
      port: 2222,
      user: 'root',
      identity_file: '/k',
      known_hosts_file: '/kh',
      host_key_alias: 'v',
      ssh_options: ['StrictHostKeyChecking=yes'],
    };
    const argv = forwardArgv(details, { guestHost: 'localhost', guestPort: 8000, label: '8000' }, 18000);
    expect(argv.slice(-2)).toEqual(['--', 'root@127.0.0.1']);
    expect(argv.join(' ')).toContain('-N -o BatchMode=yes -o ExitOnForwardFailure=yes');
    expect(argv[argv.indexOf('-L') + 1]).toBe('127.0.0.1:18000:localhost:8000');
    expect(
      forwardLine({ spec: { guestHost: 'localhost', guestPort: 8000, label: '8000' }, hostPort: 8000 }),
    ).toBe('forwarding 127.0.0.1:8000 → guest localhost:8000');
  });

  it('a taken host port gives another free one', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const taken = (srv.address() as { port: number }).port;
    try {
      const got = await pickHostPort(taken);
      expect(got).not.toBe(taken);
      expect(got).toBeGreaterThan(0);
    } finally {
      srv.close();
    }
  });
});

describe('vm run --dry-run with a devcontainer', () => {
  it('says what it would pull, where it copies, what it runs and as whom', () => {
    const d = dc(
      `{"remoteUser": "dev", "postCreateCommand": {"a": "make", "b": ["x", "y z"]}, "forwardPorts": [8000], "workspaceFolder": "/src"}`,
    );
    const plan = {
      name: 'calm-otter',
      name_generated: true,
      image: 'py-3',
      image_ready: true,
      vcpus: 2,
      memory_mib: 1024,
      disk_size_bytes: 4 * 1024 ** 3,
      network: 'user',
      nat: false,
    } as VmCreatePlanResult;
    const steps = planSteps({
      plan,
      repo: {
        root: '/r/app',
        head: 'a'.repeat(40),
        files: ['f'],
        untracked: 0,
        bytes: 10,
        mode: 'tracked',
        includeUntracked: false,
      } as never,
      command: ['make', 'test'],
      rm: true,
      detach: false,
      bin: 'banger',
      guestPath: d.workspaceFolder,
      pull: { reference: 'python:3', name: 'py-3' },
      extraSteps: devcontainerSteps(d),
      runAs: 'dev',
    });
    expect(steps[0]).toBe('pull python:3 as image py-3 (once; cached afterwards)');
    expect(steps.some((s) => s.includes('to /src, with a shallow git history'))).toBe(true);
    expect(steps).toContain('create user dev if missing, and give it /src');
    expect(steps).toContain("run postCreateCommand (2 in parallel): a: make | b: x 'y z'");
    expect(steps).toContain('forward 8000 to 127.0.0.1 on the host (the same port when free)');
    expect(steps).toContain('run make test in /src as dev and exit with its exit code');
  });
});
