// Reading an ext4 image back with debugfs (no mount, no root): every inode's type, mode, owner,
// size, link target, device numbers, mtime and xattrs, for comparing with what the layers said.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ImageInode {
  path: string;
  ino: number;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  mtime: number;
  target?: string;
  dev?: [number, number];
  xattrs: Record<string, string>;
}

const ENV = { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`, LC_ALL: 'C' };

function q(s: string): string {
  return `"${s.replaceAll('"', '""')}"`;
}

/** Run debugfs commands in one batch; returns each command's output. */
export function debugfsBatch(image: string, cmds: string[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'dbf-'));
  try {
    const f = join(dir, 'cmds');
    writeFileSync(f, cmds.join('\n') + '\n');
    const out = execFileSync('debugfs', ['-f', f, image], {
      env: ENV,
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const parts = out.split(/^debugfs: .*$/m);
    return parts.slice(1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every path in the image (lost+found excluded), by walking `ls -p`. */
export function listImage(image: string): string[] {
  const all: string[] = ['/'];
  let dirs = ['/'];
  while (dirs.length > 0) {
    const outs = debugfsBatch(
      image,
      dirs.map((d) => `ls -p ${q(d)}`),
    );
    const next: string[] = [];
    outs.forEach((out, i) => {
      const d = dirs[i]!;
      for (const line of out.split('\n')) {
        // /ino/mode/uid/gid/name/size/
        const m = /^\/(\d+)\/(\d+)\/\d+\/\d+\/(.*)\/\d*\/$/.exec(line.trim());
        if (!m) continue;
        const name = m[3]!;
        if (name === '.' || name === '..') continue;
        const p = d === '/' ? `/${name}` : `${d}/${name}`;
        if (p === '/lost+found') continue;
        all.push(p);
        if ((parseInt(m[2]!, 8) & 0o170000) === 0o040000) next.push(p);
      }
    });
    dirs = next;
  }
  return all.sort();
}

export function statImage(image: string, paths: string[]): ImageInode[] {
  const outs = debugfsBatch(
    image,
    paths.map((p) => `stat ${q(p)}`),
  );
  return paths.map((path, i) => parseStat(path, outs[i] ?? ''));
}

export function catImage(image: string, path: string): Buffer {
  return execFileSync('debugfs', ['-R', `cat ${q(path)}`, image], {
    env: ENV,
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 64 * 1024 * 1024,
  });
}

export function parseStat(path: string, text: string): ImageInode {
  const num = (re: RegExp): number => {
    const m = re.exec(text);
    if (!m?.[1]) throw new Error(`debugfs stat ${path}: no ${re.source} in:\n${text}`);
    return Number(m[1]);
  };
  const t = /Type:\s+(.+?)\s+Mode:\s+([0-7]+)/.exec(text);
  if (!t) throw new Error(`debugfs stat ${path}: ${text.trim().slice(0, 200)}`);
  const r: ImageInode = {
    path,
    ino: num(/Inode:\s+(\d+)/),
    type: t[1]!,
    mode: parseInt(t[2]!, 8),
    uid: num(/User:\s+(\d+)/),
    gid: num(/Group:\s+(\d+)/),
    size: num(/Size:\s+(\d+)/),
    links: num(/Links:\s+(\d+)/),
    mtime: parseInt(/\bmtime:\s+0x([0-9a-f]+)/.exec(text)?.[1] ?? '0', 16),
    xattrs: {},
  };
  const fast = /Fast link dest:\s+"(.*)"/.exec(text);
  if (fast) r.target = fast[1];
  const dev = /Device major\/minor number:\s+(\d+):(\d+)/.exec(text);
  if (dev) r.dev = [Number(dev[1]), Number(dev[2])];
  const xa = /Extended attributes:\n((?: {2}.*\n)*)/.exec(text);
  for (const line of xa?.[1]?.split('\n') ?? []) {
    const hex = /^\s+(\S+) \((\d+)\) = ((?:[0-9a-f]{2} ?)*)$/.exec(line);
    const str = /^\s+(\S+) \(\d+\) = "(.*)"$/.exec(line);
    if (hex) r.xattrs[hex[1]!] = hex[3]!.replaceAll(' ', '');
    else if (str) r.xattrs[str[1]!] = Buffer.from(str[2]!, 'latin1').toString('hex');
  }
  return r;
}
