// The generated method pages obey the op-id rule of docs/protocol.md: a response carries the op
// id of its request, and the operation a `*.begin` call starts is identified by that same op id,
// so the example's `operation_id` must equal the response's `op_id`. Read from the generator's
// in-memory output, the pages that would be written.
import { beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../../codegen/generate.ts';

interface Line {
  method?: string;
  op_id?: string;
  result?: { operation_id?: unknown };
}

const unescape = (s: string): string =>
  s
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&');

/** Each example of a method page: its request and response lines, parsed. */
function examples(html: string): { request: Line; response: Line }[] {
  return [...html.matchAll(/<pre\s+class="ndjson"\s*><code>([\s\S]*?)<\/code><\/pre>/g)].map((m) => {
    const [request, response] = unescape(m[1] as string)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Line);
    return { request: request as Line, response: response as Line };
  });
}

describe('docs examples and op ids', () => {
  let pages: Map<string, string>;
  beforeAll(async () => {
    const files = await generate();
    pages = new Map(
      [...files]
        .filter(([path]) => path.startsWith('generated/docs/methods/'))
        .map(([path, text]) => [path.replace(/^.*\/(.+)\.html$/, '$1'), text]),
    );
  }, 60_000);

  it('every example response carries its request op id', () => {
    expect(pages.size).toBeGreaterThan(0);
    for (const [name, html] of pages) {
      const exs = examples(html);
      expect(exs.length, name).toBeGreaterThan(0);
      for (const { request, response } of exs) {
        expect(request.method, name).toBe(name);
        expect(request.op_id, name).toMatch(/^op-[0-9a-f]{6,32}$/);
        expect(response.op_id, name).toBe(request.op_id);
      }
    }
  });

  it('every *.begin example returns its own op id as the operation id', () => {
    const begins = [...pages.keys()].filter((n) => n.endsWith('.begin'));
    expect(begins).toEqual(
      expect.arrayContaining(['vm.create.begin', 'image.build.begin', 'image.warm.begin']),
    );
    for (const name of begins) {
      const exs = examples(pages.get(name) as string);
      expect(exs.length, name).toBeGreaterThan(0);
      for (const { response } of exs) {
        expect(response.result?.operation_id, name).toBeTypeOf('string');
        expect(response.result?.operation_id, name).toBe(response.op_id);
      }
    }
  });
});
