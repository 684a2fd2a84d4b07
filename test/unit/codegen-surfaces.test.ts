// The generated modules per surface: the shared $defs are emitted and registered once, each server
// loads only its own surface's validators (bangerd-root compiles priv.* alone), and the dispatch
// modules carry every method's declared error codes for src/rpc/error-check.ts.
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { helperDeclaredErrors } from '../../generated/dispatch.helper.gen.ts';
import { rpcDeclaredErrors } from '../../generated/dispatch.daemon.gen.ts';
import { DAEMON_METHOD_NAMES, HELPER_METHOD_NAMES, METHODS } from '../../generated/methods.gen.ts';
import { DEFS_SCHEMA, PARAMS_SCHEMAS, RESULT_SCHEMAS } from '../../generated/schemas.gen.ts';
import { daemonParamValidators, daemonResultValidators } from '../../generated/validators.daemon.gen.ts';
import { helperParamValidators, helperResultValidators } from '../../generated/validators.helper.gen.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Every file under src/ and generated/ that `entry` loads, following relative imports (not types). */
function runtimeClosure(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [resolve(ROOT, entry)];
  // Value imports and re-exports only: `import type` is erased and loads nothing.
  const re = /^(?:import|export)\s+(?!type\s)[^'"]*?from\s*['"](\.[^'"]+)['"]/gm;
  for (let file = todo.pop(); file; file = todo.pop()) {
    if (seen.has(file)) continue;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(re))
      todo.push(resolve(dirname(file), m[1] as string));
  }
  return new Set([...seen].map((f) => relative(ROOT, f)));
}

/** Every `$ref` in a JSON value. */
function refs(v: unknown): string[] {
  if (Array.isArray(v)) return v.flatMap(refs);
  if (typeof v !== 'object' || v === null) return [];
  return Object.entries(v).flatMap(([k, x]) => (k === '$ref' && typeof x === 'string' ? [x] : refs(x)));
}

describe('per-surface modules', () => {
  it('bangerd-root loads the helper validators and dispatch only', () => {
    const loaded = runtimeClosure('src/helper/main.ts');
    expect(loaded).toContain('generated/validators.helper.gen.ts');
    expect(loaded).toContain('generated/dispatch.helper.gen.ts');
    for (const f of [
      'validators.daemon.gen.ts',
      'validators.gen.ts',
      'dispatch.daemon.gen.ts',
      'dispatch.gen.ts',
    ])
      expect(loaded, f).not.toContain(`generated/${f}`);
  });

  it('the daemon loads its own dispatch, not the helper validators', () => {
    const loaded = runtimeClosure('src/daemon/daemon.ts');
    expect(loaded).toContain('generated/dispatch.daemon.gen.ts');
    expect(loaded).not.toContain('generated/validators.helper.gen.ts');
  });

  it('each surface compiles exactly its methods', () => {
    const withParams = (names: readonly string[]) => names.filter((m) => m in PARAMS_SCHEMAS).sort();
    expect(Object.keys(helperResultValidators).sort()).toEqual([...HELPER_METHOD_NAMES].sort());
    expect(Object.keys(helperParamValidators).sort()).toEqual(withParams(HELPER_METHOD_NAMES));
    expect(Object.keys(helperResultValidators).every((m) => m.startsWith('priv.'))).toBe(true);
    expect(Object.keys(daemonResultValidators).sort()).toEqual([...DAEMON_METHOD_NAMES].sort());
    expect(Object.keys(daemonParamValidators).sort()).toEqual(withParams(DAEMON_METHOD_NAMES));
  });

  it('the validators resolve the shared $defs, and still refuse what they describe', () => {
    // vm.show's name is a $ref to VmName in DEFS_SCHEMA.
    const show = daemonParamValidators['vm.show'];
    expect(show({ name: 'box-1' })).toBe(true);
    expect(show({ name: 'Box 1' })).toBe(false);
    const tap = helperParamValidators['priv.delete_tap'];
    expect(tap({ tap: 'bgt0123456789ab' })).toBe(true);
    expect(tap({ tap: 'eth0; rm -rf /' })).toBe(false);
  });
});

describe('the shared $defs, once', () => {
  const all = [...Object.values(PARAMS_SCHEMAS), ...Object.values(RESULT_SCHEMAS)];

  it('no method schema carries its own $defs', () => {
    for (const s of all) expect(s).not.toHaveProperty('$defs');
  });

  it('every $ref of a method schema points into DEFS_SCHEMA, and resolves there', () => {
    const defs = DEFS_SCHEMA.$defs as Record<string, unknown>;
    const used = all.flatMap(refs);
    expect(used.length).toBeGreaterThan(20);
    for (const r of used) {
      expect(r).toMatch(/^banger:defs#\/\$defs\/\w+$/);
      expect(defs, r).toHaveProperty(r.split('/').at(-1) as string);
    }
    // Inside the defs, references stay local to the defs document.
    for (const r of refs(defs)) expect(r).toMatch(/^#\/\$defs\/\w+$/);
  });
});

describe('declared error codes in the dispatch modules', () => {
  it("equal each method's schema record", () => {
    const declared: Record<string, readonly string[]> = { ...rpcDeclaredErrors, ...helperDeclaredErrors };
    expect(Object.keys(declared).sort()).toEqual(Object.keys(METHODS).sort());
    for (const [m, info] of Object.entries(METHODS)) expect(declared[m], m).toEqual(info.errors);
  });

  it('declare what the lifecycle can refuse: conflict for a busy VM on every VM verb', () => {
    for (const m of [
      'vm.start',
      'vm.stop',
      'vm.restart',
      'vm.kill',
      'vm.resume',
      'vm.delete',
      'vm.set',
    ] as const)
      expect(rpcDeclaredErrors[m], m).toContain('conflict');
    for (const m of ['vm.stop', 'vm.kill', 'vm.resume', 'vm.ssh', 'vm.ports'] as const)
      expect(rpcDeclaredErrors[m], m).toContain('not_running');
  });
});
