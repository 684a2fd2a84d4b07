// Bind a unix socket safely: refuse to steal a socket another live server answers on, remove a
// stale one, create the parent directory with the wanted mode, set the socket's mode/owner.
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, type Server } from 'node:net';
import { dirname } from 'node:path';

/** Whether something accepts connections on the unix socket at path. */
export function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

export interface ListenOptions {
  dirMode?: number;
  socketMode?: number;
  owner?: { uid: number; gid: number };
}

export async function listenUnix(server: Server, path: string, opts: ListenOptions = {}): Promise<void> {
  const dir = dirname(path);
  // Only a directory we create gets our mode; an existing one is the user's business.
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: opts.dirMode ?? 0o700 });
    if (opts.dirMode !== undefined) chmodSync(dir, opts.dirMode);
  }
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket())
      throw new Error(`${path} exists and is not a socket; refusing to replace it`);
    if (await answers(path)) throw new Error(`another server is already listening on ${path}`);
    unlinkSync(path);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(path, opts.socketMode ?? 0o600);
  if (opts.owner) chownSync(path, opts.owner.uid, opts.owner.gid);
}
