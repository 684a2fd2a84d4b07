// devcontainer.json, read by `banger vm run PATH`: where it is, what it says (JSONC, parsed by
// Microsoft's jsonc-parser, the one VS Code and the devcontainers CLI use), with the
// ${localEnv:…} substitutions done on the host and ${containerEnv:…} kept for the guest. Pure
// apart from finding the file, so every form is unit-tested; src/cli/devcontainer-run.ts acts on it.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parse, printParseErrorCode, type ParseError } from 'jsonc-parser';
import type { EnvEntry, EnvPart } from './guest-command.ts';
import { isEnvName } from './guest-command.ts';

/** The lifecycle keys banger runs, in the order devcontainers run them. */
export const LIFECYCLE_KEYS = [
  'onCreateCommand',
  'updateContentCommand',
  'postCreateCommand',
  'postStartCommand',
  'postAttachCommand',
] as const;
export type LifecycleKey = (typeof LIFECYCLE_KEYS)[number];

/** One command: a string runs in `/bin/sh -c`, an array is an argv run as it is. */
export type LifecycleCommand = { shell: string } | { argv: string[] };

/** A lifecycle key's commands: one, or several named ones run in parallel (the object form). */
export interface LifecycleStep {
  key: LifecycleKey;
  commands: { name?: string; command: LifecycleCommand }[];
}

export interface PortForward {
  /** The guest-side host the port is on (localhost unless "host:port" says otherwise). */
  guestHost: string;
  guestPort: number;
  /** What the user wrote, for messages. */
  label: string;
}

export interface Devcontainer {
  /** The file read. */
  path: string;
  image?: string;
  containerEnv: EnvEntry[];
  remoteEnv: EnvEntry[];
  remoteUser?: string;
  containerUser?: string;
  workspaceFolder: string;
  lifecycle: LifecycleStep[];
  forwardPorts: PortForward[];
  /** Keys present that banger does not act on (named in one warning line). */
  unsupported: string[];
}

export class DevcontainerError extends Error {
  constructor(path: string, why: string) {
    super(`${path}: ${why}`);
    this.name = 'DevcontainerError';
  }
}

/** Keys banger acts on. */
const SUPPORTED = new Set<string>([
  'image',
  'containerEnv',
  'remoteEnv',
  'remoteUser',
  'containerUser',
  'workspaceFolder',
  'forwardPorts',
  ...LIFECYCLE_KEYS,
]);

/** Keys that change nothing about a sandbox (editor settings, UI labels): ignored without a word. */
const IGNORED = new Set<string>([
  '$schema',
  'name',
  'customizations',
  'portsAttributes',
  'otherPortsAttributes',
  'shutdownAction',
  'overrideCommand',
  'updateRemoteUserUID',
  'userEnvProbe',
  'waitFor',
]);

/** PATH/.devcontainer/devcontainer.json, else PATH/.devcontainer.json (the spec's two places). */
export function findDevcontainer(root: string): string | undefined {
  for (const p of [join(root, '.devcontainer', 'devcontainer.json'), join(root, '.devcontainer.json')]) {
    if (existsSync(p)) return p;
  }
  return undefined;
}

export interface ParseContext {
  /** The file, for messages. */
  path: string;
  /** The host environment (${localEnv:VAR}). */
  localEnv: Readonly<Record<string, string | undefined>>;
  /** The host work tree (${localWorkspaceFolder}, and the default /workspaces/<basename>). */
  localWorkspaceFolder: string;
}

/** Read and parse the file found by findDevcontainer. */
export function readDevcontainer(path: string, ctx: Omit<ParseContext, 'path'>): Devcontainer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new DevcontainerError(path, `cannot read it: ${(e as Error).message}`);
  }
  return parseDevcontainer(text, { ...ctx, path });
}

/** Line and column (1-based) of an offset, for parse errors. */
function lineCol(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n');
  return `${before.length}:${(before.at(-1)?.length ?? 0) + 1}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const VAR = /\$\{([A-Za-z]+)(?::([^}:]*))?(?::([^}]*))?\}/g;

/**
 * Host-side substitution (${localEnv:VAR[:default]}, ${localWorkspaceFolder}, …). Anything else,
 * ${containerEnv:…} included, is left as written: containerEnv is the guest's business.
 */
export function substituteLocal(s: string, ctx: ParseContext, containerFolder: string): string {
  return s.replace(VAR, (whole, kind: string, arg: string | undefined, dflt: string | undefined) => {
    switch (kind) {
      case 'localEnv':
      case 'env':
        return arg !== undefined ? (ctx.localEnv[arg] ?? dflt ?? '') : whole;
      case 'localWorkspaceFolder':
        return ctx.localWorkspaceFolder;
      case 'localWorkspaceFolderBasename':
        return basename(ctx.localWorkspaceFolder);
      case 'containerWorkspaceFolder':
        return containerFolder;
      case 'containerWorkspaceFolderBasename':
        return basename(containerFolder);
      default:
        return whole;
    }
  });
}

/** A remoteEnv value: ${containerEnv:VAR[:default]} becomes a guest variable, the rest text. */
export function containerEnvParts(s: string): EnvPart[] {
  const parts: EnvPart[] = [];
  let last = 0;
  for (const m of s.matchAll(VAR)) {
    const [whole, kind, arg, dflt] = m;
    if (kind !== 'containerEnv' || arg === undefined || !isEnvName(arg)) continue;
    if (m.index > last) parts.push({ text: s.slice(last, m.index) });
    parts.push(dflt !== undefined ? { guestVar: arg, fallback: dflt } : { guestVar: arg });
    last = m.index + whole.length;
  }
  if (last < s.length || parts.length === 0) parts.push({ text: s.slice(last) });
  return parts;
}

export function parseDevcontainer(text: string, ctx: ParseContext): Devcontainer {
  const errors: ParseError[] = [];
  const root: unknown = parse(text, errors, { allowTrailingComma: true, disallowComments: false });
  const first = errors[0];
  if (first)
    throw new DevcontainerError(
      ctx.path,
      `not valid JSONC at ${lineCol(text, first.offset)}: ${printParseErrorCode(first.error)}`,
    );
  if (!isRecord(root)) throw new DevcontainerError(ctx.path, 'the top level must be an object');
  const bad = (key: string, want: string): DevcontainerError =>
    new DevcontainerError(ctx.path, `"${key}" must be ${want}`);

  const str = (key: string): string | undefined => {
    const v = root[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw bad(key, 'a string');
    return v;
  };

  const rawFolder = str('workspaceFolder');
  const defaultFolder = `/workspaces/${basename(ctx.localWorkspaceFolder)}`;
  // ${containerWorkspaceFolder} inside workspaceFolder itself would be circular: the default.
  const workspaceFolder =
    rawFolder !== undefined && rawFolder !== ''
      ? substituteLocal(rawFolder, ctx, defaultFolder)
      : defaultFolder;
  if (!workspaceFolder.startsWith('/')) throw bad('workspaceFolder', 'an absolute path in the guest');
  const sub = (s: string): string => substituteLocal(s, ctx, workspaceFolder);

  const env = (key: string, guestRefs: boolean): EnvEntry[] => {
    const v = root[key];
    if (v === undefined || v === null) return [];
    if (!isRecord(v)) throw bad(key, 'an object of NAME: "value"');
    const out: EnvEntry[] = [];
    for (const [name, value] of Object.entries(v)) {
      if (!isEnvName(name)) throw bad(key, `an object of NAME: "value" ("${name}" is not a variable name)`);
      // remoteEnv's null means "unset": nothing to add.
      if (value === null) continue;
      if (typeof value !== 'string') throw bad(`${key}.${name}`, 'a string');
      const s = sub(value);
      out.push({ name, value: guestRefs ? containerEnvParts(s) : [{ text: s }] });
    }
    return out;
  };

  const lifecycle: LifecycleStep[] = [];
  for (const key of LIFECYCLE_KEYS) {
    const commands = lifecycleCommands(root[key], key, bad, sub);
    if (commands.length > 0) lifecycle.push({ key, commands });
  }

  const out: Devcontainer = {
    path: ctx.path,
    containerEnv: env('containerEnv', false),
    remoteEnv: env('remoteEnv', true),
    workspaceFolder,
    lifecycle,
    forwardPorts: forwardPorts(root.forwardPorts, bad),
    unsupported: Object.keys(root).filter((k) => !SUPPORTED.has(k) && !IGNORED.has(k)),
  };
  const image = str('image');
  if (image !== undefined && image.trim() !== '') out.image = sub(image).trim();
  for (const key of ['remoteUser', 'containerUser'] as const) {
    const u = str(key);
    if (u === undefined || u === '') continue;
    const s = sub(u);
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$/.test(s))
      throw bad(key, 'a user name or uid (optionally :group)');
    out[key] = s;
  }
  return out;
}

function lifecycleCommand(
  v: unknown,
  key: string,
  bad: (key: string, want: string) => DevcontainerError,
  sub: (s: string) => string,
): LifecycleCommand | undefined {
  if (typeof v === 'string') return v.trim() === '' ? undefined : { shell: sub(v) };
  if (Array.isArray(v)) {
    if (!v.every((a): a is string => typeof a === 'string')) throw bad(key, 'an array of strings');
    return v.length === 0 ? undefined : { argv: v.map(sub) };
  }
  throw bad(key, 'a string, an array of strings, or an object of those');
}

function lifecycleCommands(
  v: unknown,
  key: LifecycleKey,
  bad: (key: string, want: string) => DevcontainerError,
  sub: (s: string) => string,
): LifecycleStep['commands'] {
  if (v === undefined || v === null) return [];
  if (isRecord(v)) {
    const out: LifecycleStep['commands'] = [];
    for (const [name, c] of Object.entries(v)) {
      if (c === null) continue;
      const command = lifecycleCommand(c, `${key}.${name}`, bad, sub);
      if (command) out.push({ name, command });
    }
    return out;
  }
  const command = lifecycleCommand(v, key, bad, sub);
  return command ? [{ command }] : [];
}

function forwardPorts(v: unknown, bad: (key: string, want: string) => DevcontainerError): PortForward[] {
  if (v === undefined || v === null) return [];
  const want = 'an array of port numbers or "host:port" strings';
  if (!Array.isArray(v)) throw bad('forwardPorts', want);
  const out: PortForward[] = [];
  const valid = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 65535;
  for (const p of v) {
    if (typeof p === 'number') {
      if (!valid(p)) throw bad('forwardPorts', `${want} (${p} is not a port)`);
      out.push({ guestHost: 'localhost', guestPort: p, label: String(p) });
    } else if (typeof p === 'string') {
      const m = /^(?:([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):)?(\d{1,5})$/.exec(p);
      const port = m ? Number(m[2]) : NaN;
      if (!m || !valid(port)) throw bad('forwardPorts', `${want} ("${p}" is neither)`);
      out.push({ guestHost: m[1] ?? 'localhost', guestPort: port, label: p });
    } else throw bad('forwardPorts', want);
  }
  return out;
}

/** The one warning line for keys banger does not act on, or undefined when there are none. */
export function unsupportedWarning(d: Devcontainer): string | undefined {
  if (d.unsupported.length === 0) return undefined;
  const keys = d.unsupported.map((k) => `"${k}"`).join(', ');
  return `${d.path}: not supported yet, ignored: ${keys} (see docs/images.md, devcontainer.json)`;
}
