// bangerd-root must stay narrow: nothing under src/helper may import the daemon's layers, directly
// or through the modules it imports (followed transitively through src/).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FORBIDDEN = ['src/daemon', 'src/vm', 'src/store', 'src/image', 'src/engine'];

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative module specifiers of a file: static imports, re-exports and dynamic import(). */
export function importsOf(source: string): string[] {
  const out: string[] = [];
  const re =
    /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\s*\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s*['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(re)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec) out.push(spec);
  }
  return out;
}

function closure(entries: string[]): Map<string, string> {
  // file → the file that pulled it in
  const seen = new Map<string, string>();
  const todo: [string, string][] = entries.map((e) => [e, '(entry)']);
  for (let item = todo.shift(); item; item = todo.shift()) {
    const [file, from] = item;
    if (seen.has(file)) continue;
    seen.set(file, from);
    for (const spec of importsOf(readFileSync(file, 'utf8'))) {
      if (!spec.startsWith('.')) continue;
      const target = resolve(dirname(file), spec);
      if (target.startsWith(join(ROOT, 'src')) || target.startsWith(join(ROOT, 'generated'))) {
        todo.push([target, file]);
      }
    }
  }
  return seen;
}

describe('import boundary of src/helper', () => {
  it('finds imports in every syntax used', () => {
    expect(
      importsOf(
        `import a from './a.ts';\nimport type { B } from "../b.ts";\nexport * from './c.ts';\nconst d = await import('./d.ts');\nimport './e.ts';`,
      ),
    ).toEqual(['./a.ts', '../b.ts', './c.ts', './d.ts', './e.ts']);
  });

  it('src/helper reaches nothing of src/daemon, src/vm, src/store, src/image, src/engine', () => {
    const entries = tsFiles(join(ROOT, 'src/helper'));
    expect(entries.length).toBeGreaterThan(2);
    const reached = closure(entries);
    const bad = [...reached.entries()]
      .map(([f, from]) => [relative(ROOT, f), relative(ROOT, from)] as const)
      .filter(([f]) => FORBIDDEN.some((d) => f.startsWith(`${d}/`)));
    expect(bad.map(([f, from]) => `${f} (imported by ${from})`)).toEqual([]);
    // The helper does use the host networking layer it exists for.
    expect([...reached.keys()].some((f) => relative(ROOT, f) === 'src/hostnet/links.ts')).toBe(true);
  });
});

/** What of `below` the files of `layer` reach, each as `file (imported by file)`. */
function reachedBelow(layer: string, below: string): string[] {
  return [...closure(tsFiles(join(ROOT, layer))).entries()]
    .map(([f, from]) => [relative(ROOT, f), relative(ROOT, from)] as const)
    .filter(([f]) => f.startsWith(`${below}/`))
    .map(([f, from]) => `${f} (imported by ${from})`);
}

describe('layering: the daemon sits on top', () => {
  // The lifecycle, engine, image, store, host-network and op layers are below the daemon: none of
  // them may reach src/daemon (it maps the wire to them, never the other way round).
  for (const layer of ['src/vm', 'src/engine', 'src/image', 'src/store', 'src/hostnet', 'src/ops']) {
    it(`${layer} reaches nothing of src/daemon`, () => {
      expect(reachedBelow(layer, 'src/daemon')).toEqual([]);
    });
  }
});

describe('layering: src/util is the floor, the CLI the roof', () => {
  it('src/util reaches nothing else of src (every layer may use it)', () => {
    const reached = closure(tsFiles(join(ROOT, 'src/util')));
    const bad = [...reached.keys()].map((f) => relative(ROOT, f)).filter((f) => !f.startsWith('src/util/'));
    expect(bad).toEqual([]);
  });
  // The shell quoting and signal exit codes they need live in src/util, not in src/cli above them.
  for (const layer of ['src/rpc', 'src/slurm', 'src/vm', 'src/engine', 'src/image']) {
    it(`${layer} reaches nothing of src/cli`, () => {
      expect(reachedBelow(layer, 'src/cli')).toEqual([]);
    });
  }
});
