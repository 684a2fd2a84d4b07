// `banger system install/uninstall`: write (or remove) the units, install.toml and the default
// config under a root prefix ("/" for real; a temp dir in tests), then drive systemctl when the
// prefix is "/" and systemd runs. Every step is reported, so the CLI can print what it did.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import {
  DAEMON_UNIT,
  daemonUnit,
  defaultSystemConfig,
  HELPER_UNIT,
  helperUnit,
  INSTALL_TOML_PATH,
  installToml,
  SYSTEM_CACHE_DIR,
  SYSTEM_CONFIG,
  SYSTEM_STATE_DIR,
  UNIT_DIR,
  type UnitFacts,
} from './units.ts';

const pexec = promisify(execFile);

export interface OwnerInfo {
  name: string;
  uid: number;
  gid: number;
  group: string;
  home: string;
}

/** The owner account from the system's user database (getent: passwd, then group). */
export async function lookupOwner(user: string): Promise<OwnerInfo> {
  if (!/^[a-z_][a-z0-9_-]{0,31}\$?$/.test(user)) throw new Error(`invalid user name ${JSON.stringify(user)}`);
  let pw: string;
  try {
    pw = (await pexec('getent', ['passwd', user])).stdout.trim();
  } catch {
    throw new Error(`no such user: ${user}`);
  }
  const f = pw.split(':');
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (f.length < 7 || !Number.isInteger(uid) || !Number.isInteger(gid))
    throw new Error(`cannot read passwd entry of ${user}`);
  let group = String(gid);
  try {
    group = (await pexec('getent', ['group', String(gid)])).stdout.split(':')[0] ?? group;
  } catch {
    // a gid without a group entry: systemd accepts the number
  }
  return { name: user, uid, gid, group, home: f[5] ?? '/' };
}

export interface InstallPlan {
  root: string;
  facts: UnitFacts;
  version: string;
}

export interface FileAction {
  path: string;
  action: 'written' | 'kept' | 'removed' | 'absent';
}

/** Write units, install.toml and (if absent) the config under plan.root. */
export async function writeInstallFiles(plan: InstallPlan, now = new Date()): Promise<FileAction[]> {
  const out: FileAction[] = [];
  const put = async (rel: string, content: string, mode: number, keep = false): Promise<void> => {
    const p = join(plan.root, rel);
    await mkdir(dirname(p), { recursive: true, mode: 0o755 });
    if (keep && existsSync(p)) {
      out.push({ path: p, action: 'kept' });
      return;
    }
    await writeFile(p, content, { mode });
    out.push({ path: p, action: 'written' });
  };
  await put(join(UNIT_DIR, HELPER_UNIT), helperUnit(plan.facts), 0o644);
  await put(join(UNIT_DIR, DAEMON_UNIT), daemonUnit(plan.facts), 0o644);
  await put(
    INSTALL_TOML_PATH,
    installToml({ ...plan.facts, version: plan.version, installedAt: now.toISOString() }),
    0o644,
  );
  await put(SYSTEM_CONFIG, defaultSystemConfig(), 0o644, true);
  return out;
}

/** Remove the units and install.toml; with purge also config, state and cache. */
export async function removeInstallFiles(root: string, purge: boolean): Promise<FileAction[]> {
  const paths = [join(UNIT_DIR, DAEMON_UNIT), join(UNIT_DIR, HELPER_UNIT), INSTALL_TOML_PATH];
  if (purge) paths.push(dirname(SYSTEM_CONFIG), SYSTEM_STATE_DIR, SYSTEM_CACHE_DIR);
  const out: FileAction[] = [];
  for (const rel of paths) {
    const p = join(root, rel);
    if (!existsSync(p)) {
      out.push({ path: p, action: 'absent' });
      continue;
    }
    await rm(p, { recursive: true, force: true });
    out.push({ path: p, action: 'removed' });
  }
  return out;
}

/** Whether systemd is PID 1 and running (the documented check: /run/systemd/system exists). */
export function systemdRunning(): boolean {
  return existsSync('/run/systemd/system');
}

export async function systemctl(args: string[]): Promise<string> {
  try {
    return (await pexec('systemctl', args, { timeout: 60_000 })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`systemctl ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
  }
}

/** `systemd-analyze verify` of unit files, when the tool exists: undefined means not available. */
export async function verifyUnits(paths: string[]): Promise<{ ok: boolean; output: string } | undefined> {
  const tool = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));
  if (!tool) return undefined;
  try {
    const r = await pexec(tool, ['verify', ...paths], { timeout: 60_000 });
    return { ok: true, output: `${r.stdout}${r.stderr}`.trim() };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}`.trim() || e.message };
  }
}

/** The owner recorded by a previous install, if any. */
export async function readInstalledOwner(root: string): Promise<string | undefined> {
  const p = join(root, INSTALL_TOML_PATH);
  if (!existsSync(p)) return undefined;
  return /^owner\s*=\s*"([^"]*)"/m.exec(await readFile(p, 'utf8'))?.[1];
}
