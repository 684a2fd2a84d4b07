import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  addContext,
  ContextError,
  contextInPlay,
  contextsFile,
  parseSshUrl,
  readContexts,
  removeContext,
  resolveTarget,
  sshDestination,
  useContext,
} from '../../src/cli/contexts.ts';

let dir: string;
let file: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ctx-test-'));
  file = join(dir, 'banger', 'contexts.json');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('ssh URLs', () => {
  it('parses user, host, port and IPv6', () => {
    expect(parseSshUrl('ssh://srv')).toEqual({ host: 'srv' });
    expect(parseSshUrl('ssh://me@srv:2222')).toEqual({ user: 'me', host: 'srv', port: 2222 });
    expect(parseSshUrl('ssh://me@[fe80::1]:22/')).toEqual({ user: 'me', host: 'fe80::1', port: 22 });
    expect(sshDestination('ssh://me@srv:2222')).toEqual({ destination: 'me@srv', port: 2222 });
    expect(sshDestination('ssh://alias')).toEqual({ destination: 'alias' });
  });
  it('refuses other schemes, paths, bad ports and option-like hosts', () => {
    for (const bad of [
      'http://srv',
      'srv',
      'ssh://srv/path',
      'ssh://srv:0',
      'ssh://srv:70000',
      'ssh://-oProxyCommand=x',
      'ssh://',
    ])
      expect(() => parseSshUrl(bad), bad).toThrow(ContextError);
  });
});

describe('the context store', () => {
  it('adds, lists, uses and removes; the file is 0600 and whole', () => {
    addContext('srv', { url: 'ssh://me@srv' }, file);
    addContext('gpu', { url: 'ssh://gpu:2222', socket: '/run/banger/bangerd.sock' }, file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'banger')).mode & 0o777).toBe(0o700);
    expect(readContexts(file)).toEqual({
      contexts: {
        srv: { url: 'ssh://me@srv' },
        gpu: { url: 'ssh://gpu:2222', socket: '/run/banger/bangerd.sock' },
      },
    });
    useContext('gpu', file);
    expect(readContexts(file).current).toBe('gpu');
    expect(removeContext('gpu', file)).toEqual({ wasCurrent: true });
    expect(readContexts(file)).toEqual({ contexts: { srv: { url: 'ssh://me@srv' } } });
    useContext('srv', file);
    useContext('default', file);
    expect(readContexts(file).current).toBeUndefined();
    // No temporary file is left next to it.
    expect(readFileSync(file, 'utf8')).toContain('"srv"');
  });
  it('refuses duplicates, reserved names, relative sockets, unknown names', () => {
    addContext('srv', { url: 'ssh://srv' }, file);
    expect(() => addContext('srv', { url: 'ssh://other' }, file)).toThrow(/exists already/);
    expect(() => addContext('default', { url: 'ssh://x' }, file)).toThrow(/reserved/);
    expect(() => addContext('auto', { url: 'ssh://x' }, file)).toThrow(/reserved/);
    expect(() => addContext('Bad Name', { url: 'ssh://x' }, file)).toThrow(/context name/);
    expect(() => addContext('rel', { url: 'ssh://x', socket: 'run/x.sock' }, file)).toThrow(/absolute/);
    expect(() => useContext('nope', file)).toThrow(/no context "nope"/);
    expect(() => removeContext('nope', file)).toThrow(/no context "nope"/);
  });
  it('says what is wrong with a damaged file', () => {
    addContext('srv', { url: 'ssh://srv' }, file);
    writeFileSync(file, '{"contexts": ');
    expect(() => readContexts(file)).toThrow(/not valid JSON/);
  });
  it('lives in $XDG_CONFIG_HOME/banger', () => {
    expect(contextsFile({ XDG_CONFIG_HOME: '/x/cfg' })).toBe('/x/cfg/banger/contexts.json');
  });
});

describe('which daemon a command talks to', () => {
  beforeEach(() => {
    addContext('a', { url: 'ssh://a' }, file);
    addContext('b', { url: 'ssh://b' }, file);
  });
  const name = (t: ReturnType<typeof resolveTarget>): string =>
    t.kind === 'remote' ? t.context.name : t.kind === 'local' ? `local:${t.socket}` : 'auto';

  it('flag > env > current > local default', () => {
    useContext('a', file);
    const env = { BANGER_CONTEXT: 'b' };
    expect(name(resolveTarget({ context: 'a' }, env, file))).toBe('a');
    expect(resolveTarget({ context: 'a' }, env, file).source).toBe('--context');
    expect(name(resolveTarget({}, env, file))).toBe('b');
    expect(resolveTarget({}, env, file).source).toBe('BANGER_CONTEXT');
    expect(name(resolveTarget({}, {}, file))).toBe('a');
    expect(resolveTarget({}, {}, file).source).toBe('current context');
    useContext('default', file);
    expect(resolveTarget({}, {}, file)).toMatchObject({ kind: 'local', source: 'default' });
  });
  it('--socket is an explicit local daemon: above the env and the current context', () => {
    useContext('a', file);
    expect(name(resolveTarget({ socket: '/s.sock' }, { BANGER_CONTEXT: 'b' }, file))).toBe('local:/s.sock');
    expect(() => resolveTarget({ context: 'a', socket: '/s.sock' }, {}, file)).toThrow(/give one of them/);
    // BANGER_SOCKET is below BANGER_CONTEXT, above the current context.
    expect(name(resolveTarget({}, { BANGER_SOCKET: '/e.sock' }, file))).toBe('local:/e.sock');
    expect(name(resolveTarget({}, { BANGER_SOCKET: '/e.sock', BANGER_CONTEXT: 'b' }, file))).toBe('b');
  });
  it('default and auto are names too; an unknown one is an error naming the known', () => {
    expect(resolveTarget({ context: 'default' }, { BANGER_CONTEXT: 'a' }, file).kind).toBe('local');
    expect(resolveTarget({ context: 'auto' }, {}, file).kind).toBe('auto');
    expect(() => resolveTarget({ context: 'c' }, {}, file)).toThrow(/known: default, a, b/);
    expect(() => resolveTarget({}, { BANGER_CONTEXT: 'c' }, file)).toThrow(/no context "c"/);
  });
  it('a current context that was removed by hand is reported', () => {
    writeFileSync(file, JSON.stringify({ current: 'gone', contexts: {} }));
    expect(() => resolveTarget({}, {}, file)).toThrow(/no longer exists/);
  });
  it('the fast path stands aside when a context is in play', () => {
    const env = { XDG_CONFIG_HOME: dir };
    expect(contextInPlay(env)).toBe(false);
    useContext('a', file);
    expect(contextInPlay(env)).toBe(true);
    useContext('default', file);
    expect(contextInPlay(env)).toBe(false);
    expect(contextInPlay({ ...env, BANGER_CONTEXT: 'a' })).toBe(true);
  });
});
