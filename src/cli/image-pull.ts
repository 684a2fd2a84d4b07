// What `image pull` and `image import --oci-layout/--docker-archive` share: begin an
// image.pull operation, draw its steps (download bytes per layer and overall in the step's detail)
// on stderr until it ends, and word the outcome. Ctrl-C cancels the pull (verified layers stay in
// the cache) and exits 130.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { BangerClient } from '../../generated/client.gen.ts';
import type {
  ImagePullBeginParams,
  ImagePullBeginResult,
  ImagePullStatusResult,
} from '../../generated/types.gen.ts';
import { ErrorResponse, isErrorCode } from '../rpc/errors.ts';
import { formatBytes, formatDuration, normalizeSize, paint, useColor } from './format.ts';
import { failedStep, operationElapsed, watchOperation } from './progress.ts';
import { checkResourceName, usageError } from './vm-ref.ts';

export interface PullIo {
  client: BangerClient;
  bin: string;
  json: boolean;
  say(line: string): void;
}

/**
 * `PATH[:TAG]` as the CLI takes it for an OCI layout or a docker archive: the longest prefix that
 * exists on disk is the path (so a path with a colon in it works), the rest the tag. Relative paths
 * are taken from the current directory.
 */
export function splitSourceArg(
  arg: string,
  flag: string,
  kind: 'dir' | 'file',
): { path: string; tag?: string } {
  const candidates: { path: string; tag?: string }[] = [{ path: arg }];
  for (let i = arg.length - 1; i > 0; i--) {
    if (arg[i] === ':' && i < arg.length - 1)
      candidates.push({ path: arg.slice(0, i), tag: arg.slice(i + 1) });
  }
  for (const c of candidates) {
    const abs = resolve(c.path);
    if (!existsSync(abs)) continue;
    const st = statSync(abs);
    if (kind === 'dir' && !st.isDirectory())
      throw usageError(`${flag} ${c.path}: not a directory (an OCI image layout is one)`);
    if (kind === 'file' && !st.isFile()) throw usageError(`${flag} ${c.path}: not a regular file`);
    return c.tag !== undefined ? { path: abs, tag: c.tag } : { path: abs };
  }
  throw usageError(`${flag} ${arg}: no such ${kind === 'dir' ? 'directory' : 'file'}`);
}

function sourceWords(p: ImagePullBeginParams): string {
  if (p.reference !== undefined) return p.reference;
  const tag = p.tag !== undefined ? `:${p.tag}` : '';
  return p.oci_layout !== undefined
    ? `OCI layout ${p.oci_layout}${tag}`
    : `docker archive ${p.docker_archive}${tag}`;
}

/** Begin the pull; with `detach`, return at once, else watch it to the end. */
export async function runPull(
  io: PullIo,
  p: ImagePullBeginParams,
  detach: boolean,
): Promise<ImagePullStatusResult | ImagePullBeginResult> {
  const begun = await io.client.image.pull.begin(p);
  const opId = begun.operation_id;
  const verb = p.reference !== undefined ? 'pulling' : 'importing';
  if (detach) {
    io.say(`${verb} ${sourceWords(p)} as image ${begun.name} in the background (${opId})`);
    io.say(`check on it: ${io.bin} op show ${opId}`);
    return begun;
  }
  const { last } = await watchOperation(() => io.client.image.pull.status({ operation_id: opId }), {
    title: `${verb === 'pulling' ? 'Pulling' : 'Importing'} ${sourceWords(p)} as image ${begun.name}`,
    cancel: () => io.client.image.pull.cancel({ operation_id: opId }),
    color: useColor(process.stderr),
  });
  const op = last.operation;
  const took = formatDuration(operationElapsed(op, Date.now()));
  if (op.state === 'succeeded') {
    const color = useColor(process.stdout);
    const img = last.image;
    if (img) {
      io.say(
        `${paint(color, 'green', '✓')} image ${img.name} ready in ${took}: ${formatBytes(img.size_bytes)} root filesystem from ${img.reference ?? sourceWords(p)}${img.digest ? ` (${img.digest.slice(0, 19)}…)` : ''}, kernel ${img.kernel_version}${img.default ? ', the default image' : ''}`,
      );
      io.say(`  run something in it: ${io.bin} vm run --image ${img.name} --rm -- uname -a`);
    } else {
      io.say(`${paint(color, 'green', '✓')} image ${begun.name} ready in ${took}`);
    }
    return last;
  }
  if (op.state === 'canceled') {
    throw new ErrorResponse(
      'canceled',
      `${verb} image ${begun.name} canceled; nothing was recorded (downloaded layers stay in the cache)`,
      { opId: op.id },
    );
  }
  const step = failedStep(op);
  if (!io.json) {
    const c = useColor(process.stderr);
    const d = step?.duration_ms !== undefined ? ` after ${formatDuration(step.duration_ms)}` : '';
    process.stderr.write(
      `${paint(c, 'red', '✗')} ${verb} image ${begun.name} failed` +
        (step ? ` at step ${step.name}${d}${step.detail ? `: ${step.detail}` : ''}` : '') +
        '\n',
    );
    process.stderr.write(`  nothing was recorded; every daemon log line of it carries ${op.id}\n`);
  }
  const code = op.error && isErrorCode(op.error.code) ? op.error.code : 'operation_failed';
  throw new ErrorResponse(code, op.error?.message ?? step?.detail ?? `${verb} failed`, { opId: op.id });
}

/** The flags image pull and image import's OCI forms share, as params. */
export function commonPullParams(flags: {
  name?: string | undefined;
  platform?: string | undefined;
  size?: string | undefined;
  default?: boolean | undefined;
}): Partial<ImagePullBeginParams> {
  const p: Partial<ImagePullBeginParams> = {};
  if (flags.name !== undefined) {
    checkResourceName(flags.name, 'image');
    p.name = flags.name;
  }
  if (flags.platform !== undefined) {
    if (!/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(flags.platform))
      throw usageError(
        `--platform ${flags.platform}: use os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8`,
      );
    p.platform = flags.platform;
  }
  if (flags.size !== undefined) {
    const s = normalizeSize(flags.size);
    if (s === undefined)
      throw usageError(`--size ${flags.size}: use a number with an optional K, M, G or T suffix, e.g. 8G`);
    p.size = s;
  }
  if (flags.default) p.make_default = true;
  return p;
}
