// The generator itself: the meta-schema and cross-checks catch broken schemas with messages that
// name the place, generation is idempotent, and --check catches a hand edit (on a temp copy).
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareWithDisk, isClean, writeGenerated } from '../../codegen/check.ts';
import { generate, REPO_ROOT } from '../../codegen/generate.ts';
import type { MethodsFile } from '../../codegen/model.gen.ts';
import { checkMethodsFile } from '../../codegen/validate.ts';

const run = promisify(execFile);
const readJson = (rel: string): unknown => JSON.parse(readFileSync(join(REPO_ROOT, rel), 'utf8'));
const meta = readJson('schema/methods.schema.json') as object;
const original = readJson('schema/methods.json') as MethodsFile;

/** A deep copy of methods.json, changed by `edit`, checked. */
function problemsAfter(edit: (doc: MethodsFile & Record<string, unknown>) => void): string[] {
  const doc = structuredClone(original) as MethodsFile & Record<string, unknown>;
  edit(doc);
  return checkMethodsFile(doc, meta);
}

function method(doc: MethodsFile, name: string): MethodsFile['methods'][number] & Record<string, unknown> {
  const m = doc.methods.find((x) => x.name === name);
  if (!m) throw new Error(`no method ${name} in methods.json`);
  return m as MethodsFile['methods'][number] & Record<string, unknown>;
}
const indexOf = (name: string): number => original.methods.findIndex((m) => m.name === name);

describe('meta-schema and cross-checks', () => {
  it('accept schema/methods.json', () => {
    expect(checkMethodsFile(original, meta)).toEqual([]);
  });

  const cases: [string, (doc: MethodsFile & Record<string, unknown>) => void, RegExp][] = [
    [
      'a typo in a method field',
      (d) => {
        const m = method(d, 'daemon.status');
        m.dispach = m.dispatch;
        Reflect.deleteProperty(m, 'dispatch');
      },
      /methods\[\d+\] "daemon\.status": unknown property "dispach"/,
    ],
    [
      'an unknown error code in a method',
      (d) => {
        method(d, 'priv.ping').errors = ['not_foud' as never];
      },
      /methods\[\d+\] "priv\.ping"\.errors\[0\]: must be one of: already_exists, /,
    ],
    [
      'a universal error code listed by a method',
      (d) => {
        method(d, 'priv.ping').errors = ['bad_request'];
      },
      /"priv\.ping"\.errors: "bad_request" is universal/,
    ],
    [
      'a duplicate method name',
      (d) => {
        d.methods.push(structuredClone(method(d, 'daemon.status')));
      },
      new RegExp(
        `"daemon\\.status": duplicate name \\(first defined at methods\\[${indexOf('daemon.status')}\\]\\)`,
      ),
    ],
    [
      'a bad method name',
      (d) => {
        method(d, 'daemon.status').name = 'Daemon.Status';
      },
      /"Daemon\.Status"\.name: must match pattern/,
    ],
    [
      'params without additionalProperties: false',
      (d) => {
        Reflect.deleteProperty(method(d, 'daemon.operations.list').params ?? {}, 'additionalProperties');
      },
      /"daemon\.operations\.list"\.params: missing property "additionalProperties"/,
    ],
    [
      'a nested object without additionalProperties',
      (d) => {
        const helper = method(d, 'daemon.status').result.properties?.helper;
        if (helper) Reflect.deleteProperty(helper, 'additionalProperties');
      },
      /"daemon\.status"\.result\.properties\.helper: missing property "additionalProperties"/,
    ],
    [
      'an unknown JSON Schema keyword',
      (d) => {
        Object.assign(method(d, 'daemon.operations.list').params ?? {}, { requried: [] });
      },
      /"daemon\.operations\.list"\.params: unknown property "requried"/,
    ],
    [
      'a dangling $ref',
      (d) => {
        method(d, 'daemon.operations.list').result.properties = {
          operations: { type: 'array', items: { $ref: '#/$defs/Operashun' } },
        };
      },
      /"daemon\.operations\.list"\.result\.properties\.operations\.items\.\$ref: no such type "#\/\$defs\/Operashun"/,
    ],
    [
      'a $def whose title is not its name',
      (d) => {
        (d.$defs.Step as { title: string }).title = 'Stage';
      },
      /\$defs\.Step: title must be "Step"/,
    ],
    [
      'an example that does not match the result schema',
      (d) => {
        method(d, 'priv.ping').examples = [{ result: { pong: true } }];
      },
      /"priv\.ping"\.examples\[0\]: result must have required property 'version'/,
    ],
    [
      'an example with params the schema refuses',
      (d) => {
        method(d, 'daemon.operations.list').examples = [{ params: { limit: 0 }, result: { operations: [] } }];
      },
      /"daemon\.operations\.list"\.examples\[0\]: params\.limit must be >= 1/,
    ],
    [
      'a noParam method with params',
      (d) => {
        method(d, 'daemon.status').params = { type: 'object', additionalProperties: false, properties: {} };
      },
      /"daemon\.status": dispatch "noParam" but params are declared/,
    ],
    [
      'a namespace served by both surfaces',
      (d) => {
        method(d, 'priv.ping').name = 'daemon.ping';
      },
      /"daemon\.ping": namespace "daemon" is served by both daemon .* and helper/,
    ],
    [
      'a method that is also a prefix of another',
      (d) => {
        const m = structuredClone(method(d, 'daemon.status'));
        m.name = 'daemon.operations';
        d.methods.push(m);
      },
      /"daemon\.operations" is both a method and a prefix of "daemon\.operations\.list"/,
    ],
    [
      'an unknown top-level error code',
      (d) => {
        (d.errors as Record<string, unknown>).teapot = { description: 'short and stout', exit: 18 };
      },
      /errors: unknown property "teapot"/,
    ],
    [
      'a missing top-level error code',
      (d) => {
        delete (d.errors as Record<string, unknown>).conflict;
      },
      /errors: missing property "conflict"/,
    ],
    [
      'a stream method without a frame schema',
      (d) => {
        Reflect.deleteProperty(method(d, 'vm.logs'), 'frame');
      },
      /methods\[\d+\] "vm\.logs": kind "stream" needs a frame schema/,
    ],
    [
      'a frame schema on a unary method',
      (d) => {
        method(d, 'vm.show').frame = { type: 'object' };
      },
      /methods\[\d+\] "vm\.show": a frame schema is only for kind "stream"/,
    ],
    [
      'a stream method not dispatched with params (the stream adapter validates them)',
      (d) => {
        method(d, 'vm.logs').dispatch = 'noParam';
      },
      /methods\[\d+\] "vm\.logs": kind "stream" needs dispatch "param"/,
    ],
    [
      'two service paths with one interface name',
      (d) => {
        const m = structuredClone(method(d, 'vm.create.status'));
        m.name = 'vm_create.go';
        d.methods.push(m);
      },
      /"vm_create\.go": service interface VmCreateService would serve both vm\.create\.\* and vm_create\.\*/,
    ],
    [
      'a method named like the SDK waiter',
      (d) => {
        method(d, 'vm.show').name = 'operations.show';
      },
      /"operations" is reserved by the generated client/,
    ],
  ];
  it.each(cases)('reject %s with a message naming the place', (_what, edit, message) => {
    const problems = problemsAfter(edit);
    expect(problems.join('\n')).toMatch(message);
  });
});

// A full generation is ~6 s of CPU (ts-morph, json-schema-to-typescript, prettier over every
// file); these tests run one or two each, so on a loaded machine the default 20 s is too short.
const GENERATION = { timeout: 90_000 };

describe('generation', GENERATION, () => {
  it('is idempotent', async () => {
    const [a, b] = [await generate(), await generate()];
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [path, text] of a) expect(b.get(path), path).toBe(text);
  });

  it('starts every file with the header', async () => {
    const header = 'Code generated by codegen/main.ts from schema/';
    for (const [path, text] of await generate()) expect(text.split('\n')[0], path).toContain(header);
  });
});

describe('check mode on a temp copy', GENERATION, () => {
  let root: string;
  const main = join(REPO_ROOT, 'codegen/main.ts');
  const check = () => run(process.execPath, [main, '--check', '--root', root]);

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'banger-codegen-'));
    for (const rel of ['schema', 'generated', 'codegen/model.gen.ts']) {
      cpSync(join(REPO_ROOT, rel), join(root, rel), { recursive: true });
    }
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('passes on a fresh copy', async () => {
    const { stdout } = await check();
    expect(stdout).toContain('up to date');
  });

  it('fails after a hand edit, a deleted file and an orphan, naming each', async () => {
    const types = join(root, 'generated/types.gen.ts');
    writeFileSync(
      types,
      readFileSync(types, 'utf8').replace('export interface Step {', 'export interface Step {\n  x?: 1;'),
    );
    unlinkSync(join(root, 'generated/docs/style.css'));
    writeFileSync(join(root, 'generated/stale.gen.ts'), 'export {};\n');
    const err = await check().then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toContain('generated/ is stale: run npm run codegen');
    expect(err?.stderr).toContain('changed: generated/types.gen.ts');
    expect(err?.stderr).toContain('missing: generated/docs/style.css');
    expect(err?.stderr).toContain('orphan:  generated/stale.gen.ts');
  });

  it('writing regenerates the copy until check passes again', async () => {
    const files = await generate(root);
    writeGenerated(root, files);
    expect(isClean(compareWithDisk(root, files))).toBe(true);
    await expect(check()).resolves.toBeTruthy();
  });

  it('refuses an invalid schema before generating anything', async () => {
    const path = join(root, 'schema/methods.json');
    const doc = JSON.parse(readFileSync(path, 'utf8')) as { methods: Record<string, unknown>[] };
    (doc.methods[0] as Record<string, unknown>).dispach = 'param';
    writeFileSync(path, JSON.stringify(doc));
    const err = await check().then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(
      /schema\/methods\.json is invalid:\n {2}- methods\[0\] "[a-z.]+": unknown property "dispach"/,
    );
  });
});
