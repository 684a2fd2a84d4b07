// SSH identity: one ed25519 key per banger install, and a banger-owned known_hosts in which each
// VM's host key is pinned. banger generates the guest's host key itself (it goes in on the seed
// disk), so the key is pinned before the first connection; a mismatch is an error, never a prompt.
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.ts';
import { run } from './exec.ts';

export interface SshPaths {
  dir: string;
  privateKey: string;
  publicKey: string;
  knownHosts: string;
}

export function sshPaths(stateDir: string): SshPaths {
  const dir = join(stateDir, 'ssh');
  return {
    dir,
    privateKey: join(dir, 'id_ed25519'),
    publicKey: join(dir, 'id_ed25519.pub'),
    knownHosts: join(dir, 'known_hosts'),
  };
}

/** The alias a VM's host key is pinned under (also its DNS name in bridged mode). */
export function hostKeyAlias(vmName: string): string {
  return `${vmName}.vm`;
}

export async function ensureInstallKey(p: SshPaths): Promise<string> {
  await mkdir(p.dir, { recursive: true, mode: 0o700 });
  if (!existsSync(p.privateKey)) {
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'banger', '-f', p.privateKey]);
  }
  return (await readFile(p.publicKey, 'utf8')).trim();
}

export interface HostKeyPair {
  privateKey: string;
  publicKey: string;
}

/** A fresh ed25519 host key for a guest. */
export async function generateHostKey(tmpDir: string): Promise<HostKeyPair> {
  const f = join(tmpDir, `hostkey-${process.pid}-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'banger-guest', '-f', f]);
  const [privateKey, publicKey] = await Promise.all([readFile(f, 'utf8'), readFile(`${f}.pub`, 'utf8')]);
  const { rm } = await import('node:fs/promises');
  await Promise.all([rm(f, { force: true }), rm(`${f}.pub`, { force: true })]);
  return { privateKey, publicKey: publicKey.trim() };
}

let knownHostsLock: Promise<void> = Promise.resolve();

/** Serialize read-modify-write of known_hosts within this process. */
function withKnownHostsLock<T>(fn: () => Promise<T>): Promise<T> {
  const next = knownHostsLock.then(fn, fn);
  knownHostsLock = next.then(
    () => undefined,
    () => undefined,
  );
  return next;
}

/** Pin (or replace) the host key of `alias` in banger's known_hosts. */
export function pinHostKey(p: SshPaths, alias: string, publicKey: string): Promise<void> {
  const [type, key] = publicKey.trim().split(/\s+/);
  if (!type || !key) throw new Error('malformed host public key');
  return withKnownHostsLock(async () => {
    const lines = existsSync(p.knownHosts) ? (await readFile(p.knownHosts, 'utf8')).split('\n') : [];
    const kept = lines.filter((l) => l.trim() !== '' && l.split(/\s+/)[0] !== alias);
    kept.push(`${alias} ${type} ${key}`);
    await writeFileAtomic(p.knownHosts, `${kept.join('\n')}\n`, { mode: 0o600 });
  });
}

export function unpinHostKey(p: SshPaths, alias: string): Promise<void> {
  return withKnownHostsLock(async () => {
    if (!existsSync(p.knownHosts)) return;
    const lines = (await readFile(p.knownHosts, 'utf8')).split('\n');
    const kept = lines.filter((l) => l.trim() !== '' && l.split(/\s+/)[0] !== alias);
    await writeFileAtomic(p.knownHosts, kept.length ? `${kept.join('\n')}\n` : '', { mode: 0o600 });
  });
}

/**
 * Key exchange, in the client's order of preference (the client's first choice the server
 * supports wins). OpenSSH 9's default, the post-quantum hybrid sntrup761x25519, costs the guest
 * about 0.2 s per connection under TCG; X25519 alone is a fraction of that, and these links never
 * leave the host (loopback forward or banger's bridge). The hybrid stays as a fallback.
 */
export const SSH_KEX_ALGORITHMS =
  'curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com';

/** The ssh options every banger connection uses: pinned key, no prompts, no agent confusion. */
export function sshOptions(p: SshPaths, alias: string): string[] {
  return [
    `KexAlgorithms=${SSH_KEX_ALGORITHMS}`,
    `UserKnownHostsFile=${p.knownHosts}`,
    'StrictHostKeyChecking=yes',
    `HostKeyAlias=${alias}`,
    'IdentitiesOnly=yes',
    'PasswordAuthentication=no',
    'GlobalKnownHostsFile=/dev/null',
    'ConnectTimeout=5',
    'ServerAliveInterval=15',
  ];
}

export interface SshTarget {
  host: string;
  port: number;
  user: string;
  alias: string;
}

/** argv for `ssh` running `remoteCommand` (already quoted for the remote shell). */
export function sshArgv(p: SshPaths, t: SshTarget, remoteCommand: string, batch = true): string[] {
  const args = ['-i', p.privateKey, '-p', String(t.port), '-o', 'LogLevel=ERROR'];
  if (batch) args.push('-o', 'BatchMode=yes');
  for (const o of sshOptions(p, t.alias)) args.push('-o', o);
  args.push(`${t.user}@${t.host}`, '--', remoteCommand);
  return args;
}

/** Run a command over SSH; resolves with exit code and output (never throws on a non-zero exit). */
export function sshExec(
  p: SshPaths,
  t: SshTarget,
  remoteCommand: string,
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return import('node:child_process').then(
    ({ execFile }) =>
      new Promise((resolve) => {
        execFile(
          'ssh',
          sshArgv(p, t, remoteCommand),
          {
            timeout: opts.timeoutMs ?? 30_000,
            signal: opts.signal,
            encoding: 'utf8',
            maxBuffer: 16 * 1024 * 1024,
          },
          (err, stdout, stderr) => {
            const code = err
              ? typeof (err as { code?: unknown }).code === 'number'
                ? (err as { code: number }).code
                : 255
              : 0;
            resolve({ code, stdout, stderr });
          },
        );
      }),
  );
}
