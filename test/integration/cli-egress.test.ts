// bin/banger's egress commands against the fake daemon: --egress checked before any RPC,
// vm set --egress saying when it applies, vm show with the policy, vm egress as table and JSON.
// Needs `npm run build` first.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortTempDir } from '../helpers/tmp.ts';
import { startFakeDaemon, type FakeDaemon } from './cli-fake-daemon.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const built = existsSync(join(ROOT, 'dist/src/cli/commands/vm/egress.js'));

function banger(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(join(ROOT, 'bin', 'banger'), args, {
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe.skipIf(!built)('banger egress commands against a fake daemon', { timeout: 60_000 }, () => {
  const tmp = shortTempDir('bgegr');
  let d: FakeDaemon;
  const s = (): string[] => ['--socket', d.sock];
  beforeAll(async () => {
    d = await startFakeDaemon(tmp.dir);
  });
  afterAll(async () => {
    await d.close();
    tmp.cleanup();
  });

  it('a bad --egress is a usage error naming the flag, before any call', async () => {
    const before = d.calls.length;
    for (const bad of ['allow=*.*.com', 'allow=a.com:70000', 'some']) {
      const r = await banger([...s(), 'vm', 'create', '--name', 'x1', '--egress', bad]);
      expect(r.code, bad).toBe(2);
      expect(r.stderr).toMatch(/--egress: /);
    }
    expect(d.calls.length).toBe(before);
  });

  it('vm create and vm set pass the canonical policy; set says when it applies; show prints it', async () => {
    const c = await banger([
      ...s(),
      'vm',
      'create',
      '--name',
      'eg-one',
      '-d',
      '--egress',
      'allow=A.test:443,10.1.2.3/8',
    ]);
    expect(c.code, c.stderr).toBe(0);
    const begin = d.calls.find(
      (x) => x.method === 'vm.create.begin' && (x.params as { name?: string }).name === 'eg-one',
    );
    expect((begin?.params as { egress?: string }).egress).toBe('allow=a.test:443,10.0.0.0/8');

    const live = await banger([...s(), 'vm', 'set', 'calm-otter', '--egress', 'none']);
    expect(live.code, live.stderr).toBe(0);
    expect(live.stdout).toBe(
      'calm-otter: egress none (nothing leaves the VM), set by op-0123456789ab (enforced now)\n',
    );
    const later = await banger([...s(), 'vm', 'set', 'old-otter', '--egress', 'allow=a.test']);
    expect(later.stdout).toMatch(
      /old-otter: egress allow=a\.test, set by op-0123456789ab \(from the next start\)/,
    );
    expect(later.stderr).toMatch(/is not running/);

    const show = await banger([...s(), 'vm', 'show', 'calm-otter']);
    expect(show.stdout).toMatch(/^egress +none \(nothing leaves the VM\), set by op-0123456789ab$/m);
  });

  it('vm egress prints the policy and a table of events; --json the result', async () => {
    const r = await banger([...s(), 'vm', 'egress', 'calm-otter']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[1]).toMatch(/^TIME +VERDICT +PROTO +DESTINATION +RULE \/ REASON +OP$/);
    expect(r.stdout).toMatch(
      /DENY +http +example\.com:443 +no rule allows example\.com:443 +op-3f9a1c07b2d4/,
    );
    const j = await banger([...s(), 'vm', 'egress', 'calm-otter', '--json', '--limit', '5']);
    const out = JSON.parse(j.stdout) as { name: string; events: { verdict: string }[] };
    expect(out.name).toBe('calm-otter');
    expect(out.events[0]?.verdict).toBe('deny');
    expect(d.calls.at(-1)).toEqual({ method: 'vm.egress', params: { name: 'calm-otter', limit: 5 } });
  });
});
