// The async context of one RPC: its op id lives here, so loggers and outgoing clients read it
// without any call site passing it by hand.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { OP_ID_PATTERN } from './envelope.ts';

export interface OpStore {
  opId: string;
  method: string;
  startedAt: number;
  /** The VM this call acted on, noted by the code that touched it (see noteOpVm); for op records. */
  vm?: string;
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** What every handler and service receives. */
export interface RpcContext extends OpStore {
  /** The connecting process's credentials, when the server checks them (the root helper). */
  peer?: PeerCred;
  /** Aborted when the client's connection closes before the answer is written. */
  signal: AbortSignal;
  log: Logger;
}

export const opContext = new AsyncLocalStorage<OpStore>();

export function mintOpId(): string {
  return `op-${randomBytes(6).toString('hex')}`;
}

/** Adopt a caller's op id when it is well formed; mint a fresh one otherwise. */
export function adoptOrMintOpId(candidate: unknown): string {
  return typeof candidate === 'string' && OP_ID_PATTERN.test(candidate) ? candidate : mintOpId();
}

export function currentOpId(): string | undefined {
  return opContext.getStore()?.opId;
}

/** Note the VM the current call acts on (the first one noted wins); `banger op list --vm` finds it. */
export function noteOpVm(name: string): void {
  const s = opContext.getStore();
  if (s && s.vm === undefined) s.vm = name;
}

/** Run fn in a fresh op context (e.g. background work that should keep an operation's id). */
export function withOpId<T>(opId: string, method: string, fn: () => T): T {
  return opContext.run({ opId, method, startedAt: Date.now() }, fn);
}
