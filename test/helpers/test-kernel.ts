// The Debian cloud kernel (vmlinuz + modules) the real-QEMU integration tests boot with a busybox
// initramfs, downloaded once into a cache they share (the meta package names the current ABI
// package, which is fetched and `dpkg-deb -x`ed; nothing is installed on the host).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const KERNEL_CACHE = '/var/cache/banger-dev/kernel';

export function haveQemu(): boolean {
  try {
    execFileSync('qemu-system-x86_64', ['-version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function findFiles(dir: string, match: (name: string) => boolean, depth = 8): string[] {
  if (depth < 0 || !existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...findFiles(p, match, depth - 1));
    else if (match(e.name)) out.push(p);
  }
  return out;
}

export interface TestKernel {
  vmlinuz: string;
  /** Module name → its .ko file, for every module asked for. */
  modules: Map<string, string>;
}

function look(modules: readonly string[]): TestKernel | null {
  const vmlinuz = findFiles(KERNEL_CACHE, (n) => n.startsWith('vmlinuz-'), 2)[0];
  if (!vmlinuz) return null;
  const found = new Map<string, string>();
  for (const p of findFiles(join(KERNEL_CACHE, 'lib'), (n) => modules.some((m) => n === `${m}.ko`))) {
    found.set(p.slice(p.lastIndexOf('/') + 1, -3), p);
  }
  return found.size === modules.length ? { vmlinuz, modules: found } : null;
}

/** The kernel and these modules, downloading them once when the cache lacks them. */
export function ensureKernel(modules: readonly string[] = []): TestKernel {
  const have = look(modules);
  if (have) return have;
  mkdirSync('/var/cache/banger-dev', { recursive: true });
  const work = mkdtempSync('/var/cache/banger-dev/.kernel-dl-');
  try {
    const run = (cmd: string, args: string[]): string =>
      execFileSync(cmd, args, { cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      run('apt-get', ['download', 'linux-image-cloud-amd64']);
    } catch {
      // A fresh machine whose packages were all present never ran `apt-get update` (deps.sh
      // skips it then), and images often ship without package lists.
      run('apt-get', ['update', '-q']);
      run('apt-get', ['download', 'linux-image-cloud-amd64']);
    }
    const meta = readdirSync(work).find((f) => f.startsWith('linux-image-cloud-amd64_'))!;
    const abi = /linux-image-[0-9][^ ,(]*-cloud-amd64/.exec(run('dpkg-deb', ['-f', meta, 'Depends']))?.[0];
    if (!abi) throw new Error(`cannot resolve the ABI package from ${meta}`);
    run('apt-get', ['download', abi]);
    const deb = readdirSync(work).find((f) => f.startsWith(`${abi}_`))!;
    const tree = join(work, 'tree');
    run('dpkg-deb', ['-x', deb, tree]);
    // Someone else's cache without these modules: merge ours in.
    if (existsSync(KERNEL_CACHE)) execFileSync('cp', ['-a', `${tree}/.`, KERNEL_CACHE]);
    else renameSync(tree, KERNEL_CACHE);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const got = look(modules);
  if (!got) throw new Error(`kernel cache ${KERNEL_CACHE} is incomplete after download`);
  return got;
}
