// The in-memory model of a flattened image: directories hold name → node bindings, a node points
// at an inode (hard links share one), and file contents live outside the model (a spilled temp
// file or a range of an uncompressed layer blob). Every path is resolved inside this model:
// a symlink met on the way is followed within the image root (`..` stops at the root, as in the
// guest), never on the host.

export type InodeType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo';

export type Content =
  | { kind: 'spill'; path: string }
  /** A byte range of an uncompressed layer blob (no copy needed). */
  | { kind: 'blob'; path: string; offset: number };

export interface Inode {
  id: number;
  type: InodeType;
  /** 07777 bits (setuid, setgid, sticky, permissions). */
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  /** File size in bytes (0 for other types). */
  size: number;
  /** Symlink target, verbatim. */
  target?: string;
  devmajor: number;
  devminor: number;
  xattrs: Map<string, Buffer>;
  /** Where a non-empty file's bytes are. */
  content?: Content;
  /** Names bound to this inode in the tree. */
  nlink: number;
  /** Directories only. */
  children?: Map<string, Node>;
}

export interface Node {
  inode: Inode;
  /** Index of the layer that last created or changed this binding (whiteouts hide lower ones). */
  layer: number;
}

export class PathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PathError';
  }
}

const MAX_SYMLINK_HOPS = 40;

/**
 * A tar entry name as path components inside the root: leading `/` and `./` are dropped (absolute
 * names land inside the root), `.` and empty components vanish, `..` is refused.
 */
export function splitPath(name: string): string[] {
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..')
      throw new PathError(`${JSON.stringify(name)}: a ".." component (path traversal) is refused`);
    if (Buffer.byteLength(p) > 255)
      throw new PathError(`${JSON.stringify(name)}: a name longer than 255 bytes`);
    if (p.includes('\0')) throw new PathError(`${JSON.stringify(name)}: NUL in a file name`);
    parts.push(p);
  }
  if (name.length > 4096) throw new PathError(`${JSON.stringify(name.slice(0, 64))}…: path longer than 4096`);
  return parts;
}

export class FsTree {
  readonly root: Inode;
  private nextId = 1;
  /**
   * Refuse a path whose parent goes through a symlink climbing above the root (docker's classic
   * unpacker refuses such links) instead of stopping at the root as the guest and containerd do.
   */
  strictSymlinks = false;
  /** Called when a file's last name goes away (its spilled content can be deleted). */
  onRelease: ((inode: Inode) => void) | undefined;

  constructor() {
    this.root = this.newInode({ type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0 });
    this.root.nlink = 1;
  }

  newInode(p: { type: InodeType; mode: number; uid: number; gid: number; mtime: number }): Inode {
    const inode: Inode = {
      id: this.nextId++,
      type: p.type,
      mode: p.mode & 0o7777,
      uid: p.uid,
      gid: p.gid,
      mtime: p.mtime,
      size: 0,
      devmajor: 0,
      devminor: 0,
      xattrs: new Map(),
      nlink: 0,
    };
    if (p.type === 'dir') inode.children = new Map();
    return inode;
  }

  /**
   * The directory at `parts`, following symlinks inside the model. With `create`, missing
   * directories are made (0755 root:root, as containerd does); without, undefined when missing.
   */
  resolveDir(
    parts: readonly string[],
    opts: { create: boolean; layer: number; name: string },
  ): Inode | undefined {
    let hops = 0;
    const walk = (start: Inode[], comps: readonly string[]): Inode[] | undefined => {
      // `stack` is the chain of directories from the root, so `..` can pop.
      const stack = [...start];
      for (const c of comps) {
        if (c === '.' || c === '') continue;
        if (c === '..') {
          if (stack.length > 1) stack.pop();
          else if (this.strictSymlinks) {
            throw new PathError(`${opts.name}: goes through a symlink that points above the image root`);
          }
          continue;
        }
        const dir = stack[stack.length - 1] ?? this.root;
        const children = dir.children;
        if (!children) throw new PathError(`${opts.name}: not a directory on the way`);
        let node = children.get(c);
        if (!node) {
          if (!opts.create) return undefined;
          const inode = this.newInode({ type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0 });
          node = { inode, layer: opts.layer };
          this.bind(dir, c, node);
        }
        if (node.inode.type === 'symlink') {
          if (++hops > MAX_SYMLINK_HOPS)
            throw new PathError(`${opts.name}: too many levels of symbolic links`);
          const t = node.inode.target ?? '';
          const base = t.startsWith('/') ? [this.root] : stack;
          const resolved = walk(base, t.split('/'));
          if (!resolved) return undefined;
          stack.splice(0, stack.length, ...resolved);
          continue;
        }
        if (node.inode.type !== 'dir') {
          throw new PathError(
            `${opts.name}: ${JSON.stringify(c)} on the way is a ${node.inode.type}, not a directory`,
          );
        }
        stack.push(node.inode);
      }
      return stack;
    };
    const chain = walk([this.root], parts);
    return chain ? chain[chain.length - 1] : undefined;
  }

  bind(dir: Inode, name: string, node: Node): void {
    const children = dir.children;
    if (!children) throw new PathError(`${name}: parent is not a directory`);
    const old = children.get(name);
    if (old) this.release(old.inode);
    children.set(name, node);
    node.inode.nlink++;
  }

  unbind(dir: Inode, name: string): void {
    const old = dir.children?.get(name);
    if (!old) return;
    dir.children?.delete(name);
    this.release(old.inode);
  }

  private release(inode: Inode): void {
    inode.nlink--;
    if (inode.nlink > 0) return;
    if (inode.children) {
      for (const child of inode.children.values()) this.release(child.inode);
      inode.children.clear();
    }
    this.onRelease?.(inode);
  }

  /** Opaque directory: hide everything lower layers put under `dir` (recursively). */
  makeOpaque(dir: Inode, layer: number): void {
    const children = dir.children;
    if (!children) return;
    for (const [name, node] of [...children]) {
      if (node.layer < layer) this.unbind(dir, name);
      else if (node.inode.type === 'dir') this.makeOpaque(node.inode, layer);
    }
  }

  /** Every bound name, parents before children, names sorted (deterministic output). */
  *walk(): Generator<{ path: string; node: Node }> {
    yield { path: '/', node: { inode: this.root, layer: 0 } };
    const rec = function* (dir: Inode, prefix: string): Generator<{ path: string; node: Node }> {
      const names = [...(dir.children?.keys() ?? [])].sort();
      for (const name of names) {
        const node = dir.children?.get(name);
        if (!node) continue;
        const path = `${prefix}/${name}`;
        yield { path, node };
        if (node.inode.type === 'dir') yield* rec(node.inode, path);
      }
    };
    yield* rec(this.root, '');
  }
}
