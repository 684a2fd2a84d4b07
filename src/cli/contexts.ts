// Contexts: named remote daemons reached over SSH (`banger context add srv ssh://me@srv`), kept in
// $XDG_CONFIG_HOME/banger/contexts.json (0600, replaced atomically), and the rule that picks the
// daemon a command talks to: --context, then --socket, then BANGER_CONTEXT, then BANGER_SOCKET,
// then the current context, then the local daemon (the context named `default`).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { resolveDaemonSocket } from '../paths.ts';
import { writeFileAtomicSync } from '../util/atomic-write.ts';

/** The local daemon's context: always there, never stored. */
export const DEFAULT_CONTEXT = 'default';
/** `--context auto` (vm create, vm run): the context with the most free capacity. */
export const AUTO_CONTEXT = 'auto';

export interface StoredContext {
  /** `ssh://[user@]host[:port]` */
  url: string;
  /** The daemon's socket on the remote host; absent: asked of the remote when first connecting. */
  socket?: string;
}

export interface ContextFile {
  current?: string;
  contexts: Record<string, StoredContext>;
}

export interface RemoteContext extends StoredContext {
  name: string;
}

/** Where a command's daemon is: the local socket, or a remote context. */
export type Target =
  | { kind: 'local'; context: typeof DEFAULT_CONTEXT; socket: string; source: string }
  | { kind: 'remote'; context: RemoteContext; source: string }
  | { kind: 'auto'; source: string };

export class ContextError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ContextError';
  }
}

export function contextsFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'banger', 'contexts.json');
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function checkContextName(name: string): void {
  if (!NAME.test(name))
    throw new ContextError(
      `context name "${name}": use lower-case letters, digits, dots, dashes and underscores (at most 63), starting with a letter or digit`,
    );
  if (name === DEFAULT_CONTEXT || name === AUTO_CONTEXT)
    throw new ContextError(
      `context name "${name}" is reserved (${DEFAULT_CONTEXT}: the local daemon; ${AUTO_CONTEXT}: pick one)`,
    );
}

export interface SshUrl {
  user?: string;
  host: string;
  port?: number;
}

/** Parse `ssh://[user@]host[:port]` (host may be an ~/.ssh/config alias or `[v6 address]`). */
export function parseSshUrl(url: string): SshUrl {
  const bad = (why: string): ContextError =>
    new ContextError(`"${url}": ${why}; give ssh://[user@]host[:port], e.g. ssh://me@build-01`);
  const m = /^ssh:\/\/(?:([^@/:\s]+)@)?(\[[0-9a-fA-F:.]+\]|[^@/:[\]\s]+)(?::(\d+))?\/?$/.exec(url);
  if (!m)
    return url.startsWith('ssh://')
      ? throwIt(bad('not a valid ssh URL'))
      : throwIt(bad('only ssh:// is supported'));
  const host = m[2]!.startsWith('[') ? m[2]!.slice(1, -1) : m[2]!;
  // A leading dash would be read by ssh as an option.
  if (host.startsWith('-') || m[1]?.startsWith('-')) throw bad('host and user may not start with "-"');
  const out: SshUrl = { host };
  if (m[1] !== undefined) out.user = m[1];
  if (m[3] !== undefined) {
    const port = Number(m[3]);
    if (port < 1 || port > 65535) throw bad(`port ${m[3]} is out of range`);
    out.port = port;
  }
  return out;
}

function throwIt(e: Error): never {
  throw e;
}

/** The destination ssh is given (`user@host`), and its port when the URL has one. */
export function sshDestination(url: string): { destination: string; port?: number } {
  const u = parseSshUrl(url);
  const dest = u.user !== undefined ? `${u.user}@${u.host}` : u.host;
  return u.port !== undefined ? { destination: dest, port: u.port } : { destination: dest };
}

export function readContexts(file: string = contextsFile()): ContextFile {
  if (!existsSync(file)) return { contexts: {} };
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ContextError(`${file} is not valid JSON (${(e as Error).message}); fix or remove it`);
  }
  const o = raw as Partial<ContextFile> | null;
  if (!o || typeof o !== 'object' || typeof o.contexts !== 'object' || o.contexts === null)
    throw new ContextError(`${file} has no "contexts" object; fix or remove it`);
  const out: ContextFile = { contexts: {} };
  for (const [name, c] of Object.entries(o.contexts)) {
    if (!c || typeof c.url !== 'string') throw new ContextError(`${file}: context "${name}" has no url`);
    out.contexts[name] = typeof c.socket === 'string' ? { url: c.url, socket: c.socket } : { url: c.url };
  }
  if (typeof o.current === 'string') out.current = o.current;
  return out;
}

/** Write the file whole: a temporary file (0600) renamed over it, so a reader never sees half. */
export function writeContexts(data: ContextFile, file: string = contextsFile()): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileAtomicSync(file, `${JSON.stringify(data, undefined, 2)}\n`, { mode: 0o600 });
}

export function addContext(name: string, ctx: StoredContext, file?: string): void {
  checkContextName(name);
  parseSshUrl(ctx.url);
  if (ctx.socket !== undefined && !ctx.socket.startsWith('/'))
    throw new ContextError(`--socket ${ctx.socket}: give the absolute path of the socket on the remote host`);
  const data = readContexts(file);
  if (Object.hasOwn(data.contexts, name))
    throw new ContextError(`context "${name}" exists already (remove it first: banger context rm ${name})`);
  data.contexts[name] = ctx;
  writeContexts(data, file);
}

export function removeContext(name: string, file?: string): { wasCurrent: boolean } {
  const data = readContexts(file);
  if (!Object.hasOwn(data.contexts, name)) throw unknownContext(name, data);
  delete data.contexts[name];
  const wasCurrent = data.current === name;
  if (wasCurrent) delete data.current;
  writeContexts(data, file);
  return { wasCurrent };
}

/** Make `name` the current context (`default`: back to the local daemon). */
export function useContext(name: string, file?: string): void {
  const data = readContexts(file);
  if (name === DEFAULT_CONTEXT) delete data.current;
  else if (!Object.hasOwn(data.contexts, name)) throw unknownContext(name, data);
  else data.current = name;
  writeContexts(data, file);
}

function unknownContext(name: string, data: ContextFile): ContextError {
  const known = Object.keys(data.contexts);
  return new ContextError(
    `no context "${name}"${known.length ? ` (known: ${[DEFAULT_CONTEXT, ...known].join(', ')})` : ''}; add it with: banger context add ${name} ssh://[user@]host`,
  );
}

export function getContext(name: string, data: ContextFile): RemoteContext {
  const c = data.contexts[name];
  if (!c) throw unknownContext(name, data);
  return { name, ...c };
}

/** The daemon a command talks to. */
export function resolveTarget(
  flags: { context?: string | undefined; socket?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
  file: string = contextsFile(env),
): Target {
  if (flags.context !== undefined && flags.socket !== undefined)
    throw new ContextError('--context and --socket name two daemons: give one of them');
  const pick = (name: string, source: string): Target => {
    if (name === DEFAULT_CONTEXT)
      return { kind: 'local', context: DEFAULT_CONTEXT, socket: resolveDaemonSocket(undefined), source };
    if (name === AUTO_CONTEXT) return { kind: 'auto', source };
    return { kind: 'remote', context: getContext(name, readContexts(file)), source };
  };
  if (flags.context !== undefined) return pick(flags.context, '--context');
  if (flags.socket !== undefined)
    return { kind: 'local', context: DEFAULT_CONTEXT, socket: flags.socket, source: '--socket' };
  if (env.BANGER_CONTEXT) return pick(env.BANGER_CONTEXT, 'BANGER_CONTEXT');
  if (env.BANGER_SOCKET)
    return { kind: 'local', context: DEFAULT_CONTEXT, socket: env.BANGER_SOCKET, source: 'BANGER_SOCKET' };
  const data = readContexts(file);
  if (data.current !== undefined && data.current !== DEFAULT_CONTEXT) {
    if (!Object.hasOwn(data.contexts, data.current))
      throw new ContextError(
        `the current context "${data.current}" (${file}) no longer exists; pick another: banger context use NAME`,
      );
    return pick(data.current, 'current context');
  }
  return {
    kind: 'local',
    context: DEFAULT_CONTEXT,
    socket: resolveDaemonSocket(undefined),
    source: 'default',
  };
}

/** Whether anything would send this command to a context (the CLI's fast path stands aside). */
export function contextInPlay(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.BANGER_CONTEXT) return true;
  const file = contextsFile(env);
  if (!existsSync(file)) return false;
  try {
    return readContexts(file).current !== undefined;
  } catch {
    return true;
  }
}
