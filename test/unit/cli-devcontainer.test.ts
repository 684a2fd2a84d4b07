import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  containerEnvParts,
  DevcontainerError,
  findDevcontainer,
  parseDevcontainer,
  readDevcontainer,
  substituteLocal,
  unsupportedWarning,
  type ParseContext,
} from '../../src/cli/devcontainer.ts';
import { envWord } from '../../src/cli/guest-command.ts';

const ctx: ParseContext = {
  path: '/src/app/.devcontainer/devcontainer.json',
  localEnv: { HOME: '/home/me', TOKEN: 's3cr3t' },
  localWorkspaceFolder: '/src/app',
};
const parse = (text: string) => parseDevcontainer(text, ctx);

describe('devcontainer.json parsing', () => {
  it('reads JSONC: comments (line and block) and trailing commas', () => {
    const d = parse(`{
      // the image
      "image": "127.0.0.1:5000/py:3", /* block */
      "containerEnv": { "A": "1", },
      "forwardPorts": [8000, "db:5432",],
    }`);
    expect(d.image).toBe('127.0.0.1:5000/py:3');
    expect(d.containerEnv.map(envWord)).toEqual(['A=1']);
    expect(d.forwardPorts).toEqual([
      { guestHost: 'localhost', guestPort: 8000, label: '8000' },
      { guestHost: 'db', guestPort: 5432, label: 'db:5432' },
    ]);
    expect(d.unsupported).toEqual([]);
  });

  it('names the place of a syntax error', () => {
    expect(() => parse('{\n  "image": "x"\n  "b": 1\n}')).toThrow(
      /devcontainer.json: not valid JSONC at 3:3: CommaExpected/,
    );
    expect(() => parse('[1]')).toThrow(DevcontainerError);
  });

  it('defaults workspaceFolder to /workspaces/<basename> as devcontainers do', () => {
    expect(parse('{}').workspaceFolder).toBe('/workspaces/app');
    expect(parse('{"workspaceFolder": "/srv/${localWorkspaceFolderBasename}"}').workspaceFolder).toBe(
      '/srv/app',
    );
    expect(() => parse('{"workspaceFolder": "rel"}')).toThrow(/workspaceFolder" must be an absolute path/);
  });

  it('takes lifecycle commands in every form, in devcontainer order', () => {
    const d = parse(`{
      "postStartCommand": ["echo", "a b"],
      "postCreateCommand": { "one": "make deps", "two": ["touch", "/tmp/x"], "off": null },
      "onCreateCommand": "echo \${containerWorkspaceFolder} && echo $HOME",
      "postAttachCommand": "",
      "updateContentCommand": [],
    }`);
    expect(d.lifecycle).toEqual([
      { key: 'onCreateCommand', commands: [{ command: { shell: 'echo /workspaces/app && echo $HOME' } }] },
      {
        key: 'postCreateCommand',
        commands: [
          { name: 'one', command: { shell: 'make deps' } },
          { name: 'two', command: { argv: ['touch', '/tmp/x'] } },
        ],
      },
      { key: 'postStartCommand', commands: [{ command: { argv: ['echo', 'a b'] } }] },
    ]);
    expect(() => parse('{"postCreateCommand": 3}')).toThrow(/"postCreateCommand" must be a string, an array/);
    expect(() => parse('{"postCreateCommand": {"x": [1]}}')).toThrow(
      /"postCreateCommand.x" must be an array of strings/,
    );
  });

  it('substitutes ${localEnv:VAR} (with a default, missing: empty) on the host', () => {
    const d = parse(`{
      "containerEnv": { "T": "\${localEnv:TOKEN}", "D": "\${localEnv:NOPE:fallback}", "E": "[\${localEnv:NOPE}]", "K": "\${unknownThing}" },
      "image": "\${localEnv:NOPE:debian}:12"
    }`);
    expect(d.containerEnv.map(envWord)).toEqual(['T=s3cr3t', 'D=fallback', "E='[]'", "K='${unknownThing}'"]);
    expect(d.image).toBe('debian:12');
    expect(substituteLocal('${localWorkspaceFolder}/x', ctx, '/w')).toBe('/src/app/x');
  });

  it('keeps ${containerEnv:VAR} of remoteEnv for the guest; containerEnv itself is literal', () => {
    expect(containerEnvParts('${containerEnv:PATH}:/opt/bin')).toEqual([
      { guestVar: 'PATH' },
      { text: ':/opt/bin' },
    ]);
    expect(containerEnvParts('a${containerEnv:X:dflt}b')).toEqual([
      { text: 'a' },
      { guestVar: 'X', fallback: 'dflt' },
      { text: 'b' },
    ]);
    expect(containerEnvParts('')).toEqual([{ text: '' }]);
    const d = parse(`{ "remoteEnv": { "P": "\${containerEnv:PATH}:\${localEnv:HOME}/bin", "GONE": null },
                        "containerEnv": { "C": "\${containerEnv:PATH}" } }`);
    expect(d.remoteEnv).toEqual([{ name: 'P', value: [{ guestVar: 'PATH' }, { text: ':/home/me/bin' }] }]);
    expect(d.containerEnv).toEqual([{ name: 'C', value: [{ text: '${containerEnv:PATH}' }] }]);
    expect(() => parse('{"containerEnv": {"1X": "a"}}')).toThrow(/"1X" is not a variable name/);
    expect(() => parse('{"remoteEnv": {"X": 1}}')).toThrow(/"remoteEnv.X" must be a string/);
  });

  it('users: names, uids, name:group; anything else is refused', () => {
    const d = parse('{"remoteUser": "dev", "containerUser": "1000:1000"}');
    expect(d.remoteUser).toBe('dev');
    expect(d.containerUser).toBe('1000:1000');
    expect(() => parse('{"remoteUser": "a b"}')).toThrow(/remoteUser/);
    expect(() => parse('{"remoteUser": 1}')).toThrow(/"remoteUser" must be a string/);
  });

  it('forwardPorts: numbers or host:port, nothing else', () => {
    expect(() => parse('{"forwardPorts": [0]}')).toThrow(/0 is not a port/);
    expect(() => parse('{"forwardPorts": ["x:99999"]}')).toThrow(/"x:99999" is neither/);
    expect(() => parse('{"forwardPorts": 80}')).toThrow(/must be an array/);
  });

  it('names every unsupported key in one warning line; editor keys are ignored silently', () => {
    const d = parse(`{
      "name": "x", "customizations": {"vscode": {}}, "$schema": "s",
      "features": {}, "build": {"dockerfile": "Dockerfile"}, "mounts": [], "runArgs": [], "initializeCommand": "rm -rf ~"
    }`);
    expect(d.unsupported).toEqual(['features', 'build', 'mounts', 'runArgs', 'initializeCommand']);
    const w = unsupportedWarning(d)!;
    expect(w.split('\n')).toHaveLength(1);
    expect(w).toContain('"features", "build", "mounts", "runArgs", "initializeCommand"');
    expect(unsupportedWarning(parse('{"name": "n"}'))).toBeUndefined();
  });
});

describe('finding the file', () => {
  it('.devcontainer/devcontainer.json first, then .devcontainer.json', () => {
    const root = mkdtempSync(join(tmpdir(), 'banger-dc-'));
    expect(findDevcontainer(root)).toBeUndefined();
    writeFileSync(join(root, '.devcontainer.json'), '{"image": "b"}');
    expect(findDevcontainer(root)).toBe(join(root, '.devcontainer.json'));
    mkdirSync(join(root, '.devcontainer'));
    writeFileSync(join(root, '.devcontainer', 'devcontainer.json'), '{"image": "a", // c\n}');
    const found = findDevcontainer(root)!;
    expect(found).toBe(join(root, '.devcontainer', 'devcontainer.json'));
    const d = readDevcontainer(found, { localEnv: {}, localWorkspaceFolder: root });
    expect(d.image).toBe('a');
    expect(d.path).toBe(found);
  });
});
