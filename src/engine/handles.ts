// <vmDir>/handles.json: the transient facts about a running VMM (pid, start time, sockets) that
// a restarted daemon needs to find it again. Written atomically; read defensively.
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.ts';
import type { HandleRecord } from './driver.ts';
import { errnoCode } from './errors.ts';

export const HANDLES_FILE = 'handles.json';

export function handlesPath(vmDir: string): string {
  return join(vmDir, HANDLES_FILE);
}

export async function writeHandles(vmDir: string, rec: HandleRecord): Promise<void> {
  await writeFileAtomic(handlesPath(vmDir), JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
}

export async function removeHandles(vmDir: string): Promise<void> {
  await rm(handlesPath(vmDir), { force: true });
}

export type ReadHandlesResult =
  { ok: true; record: HandleRecord } | { ok: false; reason: 'missing' | 'invalid'; detail?: string };

export async function readHandles(vmDir: string): Promise<ReadHandlesResult> {
  let text: string;
  try {
    text = await readFile(handlesPath(vmDir), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { ok: false, reason: 'missing' };
    return { ok: false, reason: 'invalid', detail: String(err) };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return { ok: false, reason: 'invalid', detail: `not JSON: ${String(err)}` };
  }
  const problem = checkRecord(parsed);
  if (problem) return { ok: false, reason: 'invalid', detail: problem };
  return { ok: true, record: parsed as HandleRecord };
}

function checkRecord(x: unknown): string | null {
  if (typeof x !== 'object' || x === null) return 'not an object';
  const r = x as Record<string, unknown>;
  if (r.version !== 1) return `unknown version ${String(r.version)}`;
  if (r.driver !== 'qemu' && r.driver !== 'firecracker') return 'bad driver';
  for (const k of ['id', 'bootId', 'binary', 'argvHash', 'startedAt'] as const) {
    if (typeof r[k] !== 'string') return `missing ${k}`;
  }
  for (const k of ['pid', 'startTime'] as const) {
    if (typeof r[k] !== 'number' || !Number.isInteger(r[k]) || (r[k] as number) < 0) return `bad ${k}`;
  }
  const f = r.files;
  if (typeof f !== 'object' || f === null) return 'missing files';
  const files = f as Record<string, unknown>;
  for (const k of ['vmDir', 'handles', 'stderrLog', 'serialLog'] as const) {
    if (typeof files[k] !== 'string') return `missing files.${k}`;
  }
  return null;
}
