// Peer credentials of a connected unix socket (SO_PEERCRED), via the tiny Node-API addon in
// native/peercred.c (built into build/peercred.node by scripts/build-addon.mjs). bangerd-root uses
// makePeerAuthorizer() to serve only the daemon's uid and root; any failure refuses (fail closed).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { findRepoRoot } from '../util/repo-root.ts';

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

interface PeerCredAddon {
  getPeerCred(fd: number): PeerCred;
}

const ADDON_RELATIVE = join('build', 'peercred.node');

function repoRoot(): string {
  const root = findRepoRoot(import.meta.dirname);
  if (root === undefined)
    throw new Error(`peercred: cannot find the banger repo root above ${import.meta.dirname}`);
  return root;
}

let addon: PeerCredAddon | undefined;

function loadAddon(): PeerCredAddon {
  if (addon) return addon;
  const path = join(repoRoot(), ADDON_RELATIVE);
  if (!existsSync(path)) {
    throw new Error(`peercred: native addon ${path} is missing; run npm run build`);
  }
  let loaded: unknown;
  try {
    loaded = createRequire(import.meta.url)(path);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`peercred: cannot load native addon ${path} (${why}); run npm run build`, { cause: err });
  }
  if (
    typeof loaded !== 'object' ||
    loaded === null ||
    !('getPeerCred' in loaded) ||
    typeof loaded.getPeerCred !== 'function'
  ) {
    throw new Error(`peercred: ${path} does not export getPeerCred; run npm run build`);
  }
  addon = loaded as PeerCredAddon;
  return addon;
}

/**
 * The fd behind a net.Socket. Node has no public API for it, but the libuv handle of a connected
 * socket (a Pipe for unix sockets) exposes its descriptor as `_handle.fd`. The handle is null once
 * the socket is destroyed, so a closed socket can never yield a stale (possibly reused) fd.
 */
function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new Error('peercred: socket has no open file descriptor (destroyed, or not a connected socket)');
  }
  return fd;
}

/** The pid/uid/gid the kernel recorded for the other end of a connected unix socket. */
export function peerCredOf(socket: Socket): PeerCred {
  const cred = loadAddon().getPeerCred(socketFd(socket));
  return { pid: cred.pid, uid: cred.uid, gid: cred.gid };
}

/**
 * An RpcServerOptions.authorize hook: null to serve the connection, else the reason to refuse.
 * Serves only peers whose uid is in allowedUids; refuses when credentials cannot be read.
 */
export function makePeerAuthorizer(allowedUids: number[]): (socket: Socket) => string | null {
  for (const uid of allowedUids) {
    if (!Number.isInteger(uid) || uid < 0) throw new Error(`peercred: invalid allowed uid ${String(uid)}`);
  }
  const allowed = new Set(allowedUids);
  const list = allowed.size > 0 ? [...allowed].join(', ') : 'none';
  return (socket) => {
    let cred: PeerCred;
    try {
      cred = peerCredOf(socket);
    } catch (err) {
      return `cannot verify peer credentials: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (allowed.has(cred.uid)) return null;
    return `peer uid ${cred.uid} is not allowed (allowed: ${list})`;
  };
}
