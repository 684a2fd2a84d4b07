// What a command run in a guest over ssh looks like once an image's config (OCI Env, WorkingDir,
// User) or a devcontainer.json says how: the remote shell line that sets the environment, enters
// the directory and switches user. banger logs in as root, so switching is `runuser` (util-linux,
// present in Debian's minbase, unlike sudo or setpriv); pure, so every quoting path is unit-tested.
import { shellQuote } from '../util/shell.ts';

/** The run defaults an OCI image declares (the wire `Image.oci_config`). */
export interface ImageRunConfig {
  env: string[];
  working_dir?: string;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
}

/**
 * A piece of an environment value: literal text, or a variable expanded by the guest's shell
 * (with a fallback when it is unset or empty).
 */
export type EnvPart = { text: string } | { guestVar: string; fallback?: string };

export interface EnvEntry {
  name: string;
  value: EnvPart[];
}

/** How a command runs in the guest. */
export interface GuestCommandSpec {
  /** argv; empty for an interactive shell. */
  command: readonly string[];
  cwd?: string | undefined;
  env?: readonly EnvEntry[];
  /** The user to run as (`name`, `uid`, `name:group`, `uid:gid`); root or absent: no switch. */
  user?: string | undefined;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function isEnvName(s: string): boolean {
  return ENV_NAME.test(s);
}

/** `NAME=value` strings (OCI Env) as entries; an entry without `=` or with a bad name is skipped. */
export function envFromOci(env: readonly string[]): EnvEntry[] {
  const out: EnvEntry[] = [];
  for (const e of env) {
    const eq = e.indexOf('=');
    if (eq <= 0) continue;
    const name = e.slice(0, eq);
    if (!isEnvName(name)) continue;
    out.push({ name, value: [{ text: e.slice(eq + 1) }] });
  }
  return out;
}

/** Later entries win over earlier ones with the same name (image < containerEnv < remoteEnv). */
export function mergeEnv(...layers: readonly (readonly EnvEntry[])[]): EnvEntry[] {
  const byName = new Map<string, EnvEntry>();
  for (const layer of layers) for (const e of layer) byName.set(e.name, e);
  return [...byName.values()];
}

/**
 * Guest variables that banger itself sets (`known`: the image's Env, containerEnv) are replaced by
 * their values, since a variable set by the same `env` command is not visible to the shell that
 * expands the line; the others stay for the guest's shell.
 */
export function resolveGuestVars(entries: readonly EnvEntry[], known: readonly EnvEntry[]): EnvEntry[] {
  const byName = new Map(known.map((e) => [e.name, e.value]));
  return entries.map((e) => ({
    name: e.name,
    value: e.value.flatMap((p) => ('guestVar' in p ? (byName.get(p.guestVar) ?? [p]) : [p])),
  }));
}

/** Whether a user spec means root (no switch needed). */
export function isRootUser(user: string | undefined): boolean {
  if (user === undefined || user === '') return true;
  const [u, g] = user.split(':', 2);
  return (u === 'root' || u === '0') && (g === undefined || g === '' || g === 'root' || g === '0');
}

/** One shell word for a user or group: a name as it is, a number looked up in the guest's databases. */
function idWord(id: string, db: 'passwd' | 'group'): string {
  if (/^\d+$/.test(id)) return `"$(getent ${db} ${id} | cut -d: -f1)"`;
  return shellQuote([id]);
}

/** `runuser -u USER [-g GROUP] --` for a non-root user spec; '' for root. */
export function runAsPrefix(user: string | undefined): string {
  if (isRootUser(user) || user === undefined) return '';
  const [u = '', g] = user.split(':', 2);
  const group = g !== undefined && g !== '' ? ` -g ${idWord(g, 'group')}` : '';
  return `runuser -u ${idWord(u === '' ? '0' : u, 'passwd')}${group} -- `;
}

/** One `NAME=value` word: literal parts single-quoted, guest variables in double quotes. */
export function envWord(e: EnvEntry): string {
  const parts = e.value.map((p) => {
    if ('text' in p) return p.text === '' ? '' : shellQuote([p.text]);
    // Quotes inside "${V:-…}" are not portable; a command substitution starts a fresh context.
    if (p.fallback !== undefined && p.fallback !== '')
      return `"\${${p.guestVar}:-$(printf %s ${shellQuote([p.fallback])})}"`;
    return `"\${${p.guestVar}}"`;
  });
  const value = parts.join('');
  return `${e.name}=${value === '' ? "''" : value}`;
}

/**
 * The remote shell line. With no env, no user and no cwd it is the plain quoted command (or
 * undefined for ssh's own login shell), as banger always ran it. An interactive shell with an
 * environment is not a login shell, so /etc/profile does not reset the image's PATH (docker exec
 * does the same).
 */
export function guestCommandLine(spec: GuestCommandSpec): string | undefined {
  const env = spec.env ?? [];
  const runAs = runAsPrefix(spec.user);
  const cd = spec.cwd !== undefined ? `cd ${shellQuote([spec.cwd])} && ` : '';
  // `env --`: a command word starting with `-` is not taken for an option of env.
  const envPart = env.length > 0 ? `env -- ${env.map(envWord).join(' ')} ` : '';
  if (spec.command.length > 0) {
    if (runAs === '' && envPart === '') return `${cd}${shellQuote(spec.command)}`;
    return `${cd}exec ${runAs}${envPart}${shellQuote(spec.command)}`;
  }
  if (runAs === '' && envPart === '')
    return spec.cwd !== undefined ? `${cd}exec "\${SHELL:-/bin/sh}" -l` : undefined;
  // The user's own shell: runuser sets SHELL to it, so it is expanded after the switch.
  const shell = envPart === '' ? `exec "\${SHELL:-/bin/sh}" -l` : `exec "\${SHELL:-/bin/sh}"`;
  return `${cd}exec ${runAs}${envPart}sh -c ${shellQuote([shell])}`;
}

/** The image's Entrypoint + Cmd as one argv (docker's rule: Cmd are the entrypoint's arguments). */
export function entrypointCommand(cfg: ImageRunConfig | undefined): string[] {
  if (!cfg) return [];
  return [...(cfg.entrypoint ?? []), ...(cfg.cmd ?? [])];
}
