// banger secret set's stdin: piped input to EOF with one trailing newline dropped, bounded.
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readSecretValue, stripOneNewline } from '../../src/cli/secret-input.ts';

const piped = (chunks: string[]): NodeJS.ReadStream => Readable.from(chunks) as unknown as NodeJS.ReadStream;

describe('readSecretValue', () => {
  it('reads piped input to EOF and drops exactly one trailing newline', async () => {
    expect(await readSecretValue('p: ', piped(['sk-', 'abc\n']))).toBe('sk-abc');
    expect(await readSecretValue('p: ', piped(['two\n\n']))).toBe('two\n');
    expect(await readSecretValue('p: ', piped(['crlf\r\n']))).toBe('crlf');
    expect(await readSecretValue('p: ', piped([]))).toBe('');
    expect(stripOneNewline('x')).toBe('x');
  });

  it('refuses more than 64 KiB', async () => {
    await expect(readSecretValue('p: ', piped(['x'.repeat(70 * 1024)]))).rejects.toThrow(/longer than/);
  });
});
