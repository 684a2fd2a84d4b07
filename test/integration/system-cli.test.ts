// bin/banger's system, doctor and ssh-config commands as a user runs them (needs `npm run build`).
// The install flow runs against a temporary root directory: systemd is not running here.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const built = existsSync(join(ROOT, 'dist/src/cli/commands/system/install.js'));

function banger(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(join(ROOT, 'bin', 'banger'), args, {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', HOME: tmp.dir },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const tmp = shortTempDir('bgs');
afterAll(() => tmp.cleanup());

/**
 * An unprivileged user that exists on any Debian host without this suite creating one (`daemon`,
 * uid 1, from base-passwd, comes first). Not `nobody`: systemd-analyze verify warns that it is
 * unsafe as a service user. The install under --root only looks the owner up; nothing runs as it.
 */
function someUser(): { name: string; uid: number } {
  const rows = spawnSync('getent', ['passwd'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => l.split(':'))
    .filter((f) => f.length >= 7 && Number(f[2]) > 0 && Number(f[2]) !== 65534)
    .map((f) => ({ name: f[0]!, uid: Number(f[2]) }));
  const user = rows[0];
  if (!user) throw new Error('no unprivileged user in getent passwd');
  return user;
}
const OWNER = someUser();

describe.skipIf(!built)('banger system / doctor / ssh-config', () => {
  it('system install --root writes verified units and install.toml; uninstall --purge removes them', () => {
    const root = join(tmp.dir, 'root');
    const r = banger(['system', 'install', '--owner', OWNER.name, '--root', root, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      owner_uid: number;
      files: { path: string; action: string }[];
      verify: { ok?: boolean; output?: string; skipped?: string };
      started: boolean;
    };
    expect(out.owner_uid).toBe(OWNER.uid);
    expect(out.started).toBe(false);
    expect(out.files).toHaveLength(4);
    if (!out.verify.skipped) expect(out.verify).toEqual({ ok: true, output: '' });
    const unit = readFileSync(join(root, 'etc/systemd/system/bangerd.service'), 'utf8');
    expect(unit).toContain(`User=${OWNER.name}\n`);
    expect(unit).toContain(`ExecStart=${join(ROOT, 'bin')}/bangerd `);
    const toml = readFileSync(join(root, 'etc/banger/install.toml'), 'utf8');
    expect(toml).toContain(`owner_uid = ${out.owner_uid}\n`);

    const u = banger(['system', 'uninstall', '--root', root, '--purge', '--json']);
    expect(u.code, u.stderr).toBe(0);
    expect(existsSync(join(root, 'etc/systemd/system/bangerd.service'))).toBe(false);
    expect(existsSync(join(root, 'etc/banger'))).toBe(false);
  });

  it('system install refuses root as the owner, unknown users and a bad pool', () => {
    const root = join(tmp.dir, 'r2');
    const asRoot = banger(['system', 'install', '--owner', 'root', '--root', root]);
    expect(asRoot.code).toBe(2);
    expect(asRoot.stderr).toMatch(/must not be root/);
    expect(banger(['system', 'install', '--owner', 'nobody-here-x', '--root', root]).code).toBe(3);
    const pool = banger([
      'system',
      'install',
      '--owner',
      OWNER.name,
      '--root',
      root,
      '--pool',
      '10.0.0.1/16',
    ]);
    expect(pool.code).toBe(2);
    expect(pool.stderr).toMatch(/host bits/);
  });

  it('doctor without a daemon: FAIL for the daemon with a fix hint, exit 1, every check in --json', () => {
    const r = banger([
      'doctor',
      '--json',
      '--socket',
      join(tmp.dir, 'none.sock'),
      '--config',
      join(tmp.dir, 'nope.toml'),
    ]);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as {
      checks: { name: string; status: string; hint?: string }[];
      summary: { fail: number };
    };
    expect(out.checks[0]).toMatchObject({ name: 'daemon', status: 'FAIL' });
    expect(out.checks[0]!.hint).toMatch(/system install/);
    expect(out.checks.map((c) => c.name)).toContain('qemu');
    expect(out.summary.fail).toBeGreaterThanOrEqual(1);
    const human = banger([
      'doctor',
      '--socket',
      join(tmp.dir, 'none.sock'),
      '--config',
      join(tmp.dir, 'nope.toml'),
    ]);
    expect(human.stdout).toMatch(/^FAIL {2}daemon /m);
    expect(human.stdout).toMatch(/fix: /);
  });

  it('an unknown command is a usage error with a "did you mean", in the one-line error shape', () => {
    const r = banger(['vm', 'lst']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error: unknown command "vm lst"; did you mean "vm list"?\n');
    expect(r.stdout).toBe('');
    const far = banger(['vm', 'frobnicate', 'x']);
    expect(far.code).toBe(2);
    expect(far.stderr).toBe('error: unknown command "vm frobnicate"; see banger vm --help\n');
    const j = banger(['--json', 'vmm', 'list']);
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stdout)).toEqual({
      ok: false,
      exit_code: 2,
      error: { code: 'bad_request', message: 'unknown command "vmm list"; did you mean "vm list"?' },
    });
    // A topic alone still shows its help.
    expect(banger(['vm']).stdout).toMatch(/vm list/);
  });

  it('ssh-config prints the block; --install / --uninstall manage it in the file', () => {
    const sock = ['--socket', join(tmp.dir, 'none.sock')];
    const p = banger(['ssh-config', ...sock]);
    expect(p.code).toBe(0);
    expect(p.stdout).toContain('Host *.vm');
    const file = join(tmp.dir, 'ssh', 'config');
    const mine = 'Host example\n    User me\n';
    mkdirSync(join(tmp.dir, 'ssh'), { recursive: true });
    writeFileSync(file, mine);
    expect(banger(['ssh-config', '--install', '--file', file, ...sock]).code).toBe(0);
    const text = readFileSync(file, 'utf8');
    expect(text.indexOf('Host *.vm')).toBeLessThan(text.indexOf('Host example'));
    expect(
      JSON.parse(banger(['ssh-config', '--install', '--file', file, '--json', ...sock]).stdout).action,
    ).toBe('unchanged');
    expect(banger(['ssh-config', '--uninstall', '--file', file, ...sock]).code).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe(mine);
  });
});
