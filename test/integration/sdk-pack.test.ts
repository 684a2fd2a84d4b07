// The client SDK as a user gets it: `npm pack` the repository, install the tarball into a scratch
// project with its own package.json and a strict nodenext tsconfig, typecheck the docs examples
// (docs/examples/*.ts) against the installed declarations with the repo's tsc, and run the quick
// start against a live in-process daemon on a temp socket, found through $BANGER_SOCKET as the CLI
// finds it. The machine is offline: the package's own dependencies are copied into the scratch
// node_modules from the repo's (as a registry would have provided them), so `npm install --offline`
// only has to unpack the tarball. The SDK itself needs none of them, which the import walk checks.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { startDaemon, type RunningDaemon } from '../../src/daemon/start.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const NODE = process.execPath;
/** npm on the pinned Node, as `./scripts/npm` runs it. */
const NPM = join(ROOT, 'scripts/npm');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const EXAMPLES = join(ROOT, 'docs/examples');

/** The TypeScript blocks that use the SDK in docs/sdk.md and README.md. */
const DOC_BLOCKS = ['docs/sdk.md', 'README.md'].flatMap((f) =>
  [...readFileSync(join(ROOT, f), 'utf8').matchAll(/^```ts\n([\s\S]*?)^```$/gm)]
    .map((m) => m[1] as string)
    .filter((code) => code.includes("from 'banger/client'")),
);

interface Lock {
  packages: Record<string, { version?: string; dev?: boolean; dependencies?: Record<string, string> }>;
}

/** Run a command to completion (asynchronously: the daemon under test lives in this process). */
function run(
  cmd: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ stdout: string }> {
  return new Promise((ok, fail) => {
    execFile(
      cmd,
      args,
      {
        cwd,
        encoding: 'utf8',
        timeout: 180_000,
        maxBuffer: 16 * 1024 * 1024,
        env: { ...process.env, PATH: `${dirname(NODE)}:${process.env.PATH ?? ''}`, ...env },
      },
      (err, stdout, stderr) => {
        if (err) fail(new Error(`${[cmd, ...args].join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
        else ok({ stdout });
      },
    );
  });
}

/** Relative and bare specifiers of a built ES module (static imports and re-exports). */
function specifiers(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [
    ...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']/gm),
  ].map((m) => (m[1] ?? m[2]) as string);
}

describe('banger/client from a packed tarball', () => {
  const tmp = shortTempDir('sdk');
  const project = join(tmp.dir, 'proj');
  const socket = join(tmp.dir, 'd.sock');
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as Lock;
  let tarball = '';
  let daemon: RunningDaemon | undefined;

  beforeAll(async () => {
    // `npm pack` runs prepack (npm run build:sdk), so the tarball holds freshly built JS + .d.ts.
    const packed = await run(NPM, ['pack', '--json', '--pack-destination', tmp.dir], ROOT);
    const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string }[];
    tarball = join(tmp.dir, (info[0] as { filename: string }).filename);

    mkdirSync(join(project, 'node_modules'), { recursive: true });
    // What the registry would have provided: banger's runtime dependencies, and @types/node.
    const seed = Object.entries(lock.packages).filter(
      ([path, p]) =>
        path.startsWith('node_modules/') &&
        (!p.dev || path === 'node_modules/@types/node' || path === 'node_modules/undici-types'),
    );
    for (const [path] of seed) cpSync(join(ROOT, path), join(project, path), { recursive: true });
    const typesNode = lock.packages['node_modules/@types/node']?.version as string;
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({
        name: 'sdk-scratch',
        version: '1.0.0',
        private: true,
        type: 'module',
        dependencies: { banger: `file:${tarball}` },
        devDependencies: { '@types/node': typesNode },
      }),
    );
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'es2023',
          lib: ['es2023'],
          module: 'nodenext',
          moduleResolution: 'nodenext',
          types: ['node'],
          strict: true,
          noUncheckedIndexedAccess: true,
          exactOptionalPropertyTypes: true,
          // The package's .d.ts files are checked too: strict-mode clean, not just usable.
          skipLibCheck: false,
          noEmit: true,
        },
        include: ['*.ts'],
      }),
    );
    for (const f of readdirSync(EXAMPLES)) cpSync(join(EXAMPLES, f), join(project, f));
    // The code blocks of the guide and of the README's SDK section are typechecked too.
    DOC_BLOCKS.forEach((code, i) => writeFileSync(join(project, `doc-block-${i}.ts`), code));
    await run(NPM, ['install', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], project);

    daemon = await startDaemon({
      socket,
      stateDir: join(tmp.dir, 'state'),
      config: DEFAULT_CONFIG,
      helperSocket: undefined,
      logStream: new MemoryLog(),
    });
  }, 240_000);

  afterAll(async () => {
    await daemon?.stop('test');
    tmp.cleanup();
  });

  it('installs the SDK with its declarations under exports["./client"]', () => {
    const pkg = join(project, 'node_modules/banger');
    const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as {
      exports: Record<string, { types: string; default: string }>;
    };
    const client = manifest.exports['./client'];
    expect(client).toBeDefined();
    expect(existsSync(join(pkg, client?.types as string))).toBe(true);
    expect(existsSync(join(pkg, client?.default as string))).toBe(true);
  });

  it("the SDK's module graph is its own files and node builtins: no daemon, pino, ajv or sqlite", () => {
    const pkg = join(project, 'node_modules/banger');
    const seen = new Set<string>();
    const bare = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const s of specifiers(file)) {
        if (s.startsWith('.')) visit(resolve(dirname(file), s));
        else bare.add(s);
      }
    };
    visit(join(pkg, 'dist/src/sdk.js'));
    const files = [...seen].map((f) => f.slice(pkg.length + 1)).sort();
    expect(files).toContain('dist/generated/client.gen.js');
    expect(files.filter((f) => /daemon|vm\/|store|log\/|validators|schemas|context|server/.test(f))).toEqual(
      [],
    );
    expect([...bare].filter((s) => !s.startsWith('node:'))).toEqual([]);
    expect([...bare]).not.toContain('node:sqlite');
    expect([...bare]).not.toContain('node:async_hooks');
  });

  it('docs/sdk.md shows every example file as it is (and has code blocks of its own)', () => {
    const guide = readFileSync(join(ROOT, 'docs/sdk.md'), 'utf8');
    const files = readdirSync(EXAMPLES);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(guide, f).toContain(readFileSync(join(EXAMPLES, f), 'utf8'));
    expect(DOC_BLOCKS.length).toBeGreaterThan(files.length);
  });

  it('the docs examples typecheck in a strict nodenext project, and a wrong code narrowing does not', async () => {
    // The declared codes are a real type: 'conflict' is not one vm.show may reject with, so the
    // directive below is needed; were err.code any ErrorCode, tsc would flag it as unused.
    writeFileSync(
      join(project, 'negative.ts'),
      `import { isMethodError } from 'banger/client';
export function f(err: unknown): boolean {
  // @ts-expect-error vm.show declares not_found only (plus the universal codes and canceled)
  return isMethodError(err, 'vm.show') && err.code === 'conflict';
}
`,
    );
    await run(NODE, [TSC, '-p', '.'], project);
  }, 120_000);

  it('runs the quick start against a live daemon on $BANGER_SOCKET', async () => {
    const r = await run(NODE, ['quickstart.ts'], project, { BANGER_SOCKET: socket });
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ping: pong=true version=\S+$/);
    expect(lines[1]).toBe(`daemon: protocol 1, pid ${process.pid}, socket ${socket}`);
    expect(lines[2]).toMatch(/^vm\.show: not_found: .*no-such-vm.* \(op-[0-9a-f]{6,32}\)$/);
    expect(lines).toHaveLength(3);
  });

  it('new BangerClient({ socket }) reaches another socket; a dead one is a ConnectError', async () => {
    writeFileSync(
      join(project, 'other.ts'),
      `import { BangerClient, ConnectError } from 'banger/client';
const live = new BangerClient({ socket: process.argv[2] as string });
console.log(live.socket, (await live.ping()).pong);
try {
  await new BangerClient({ socket: process.argv[2] + '.nope' }).ping();
} catch (err) {
  console.log(err instanceof ConnectError ? 'ConnectError' : String(err));
}
`,
    );
    const r = await run(NODE, ['other.ts', socket], project, { BANGER_SOCKET: '/nonexistent/bangerd.sock' });
    expect(r.stdout.trim().split('\n')).toEqual([`${socket} true`, 'ConnectError']);
  });
});
