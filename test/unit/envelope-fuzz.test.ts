// Property tests of the envelope decoder: it never throws, and whatever it accepts is a
// well-typed envelope carrying only known fields.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { decodeEnvelope } from '../../src/rpc/server.ts';

describe('decodeEnvelope', () => {
  it('never throws on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const r = decodeEnvelope(s);
        expect(r instanceof ErrorResponse || typeof r === 'object').toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws on arbitrary JSON values, and accepts only well-formed envelopes', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const r = decodeEnvelope(JSON.stringify(v));
        if (r instanceof ErrorResponse) {
          expect(r.code).toBe('bad_request');
          return;
        }
        expect(Number.isInteger(r.version)).toBe(true);
        expect(typeof r.method).toBe('string');
        expect(Object.keys(r).every((k) => ['version', 'method', 'params', 'op_id'].includes(k))).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips generated valid envelopes', () => {
    const env = fc.record(
      {
        version: fc.integer(),
        method: fc.string({ minLength: 1, maxLength: 40 }),
        params: fc.dictionary(fc.string(), fc.jsonValue()),
        op_id: fc.string(),
      },
      { requiredKeys: ['version', 'method'] },
    );
    fc.assert(
      fc.property(env, (e) => {
        const r = decodeEnvelope(JSON.stringify(e));
        expect(r).not.toBeInstanceOf(ErrorResponse);
        expect(r).toMatchObject({ version: e.version, method: e.method });
      }),
      { numRuns: 1000 },
    );
  });

  it('rejects each malformed shape with a message naming the field', () => {
    const cases: [string, RegExp][] = [
      ['', /not valid JSON/],
      ['{"version":1}', /method/],
      ['{"method":"ping"}', /version/],
      ['{"version":"1","method":"ping"}', /version/],
      ['{"version":1,"method":"ping","params":[1]}', /params/],
      ['{"version":1,"method":"ping","op_id":7}', /op_id/],
      ['{"version":1,"method":"ping","extra":7}', /extra/],
      ['null', /object/],
    ];
    for (const [line, re] of cases) {
      const r = decodeEnvelope(line);
      expect(r).toBeInstanceOf(ErrorResponse);
      expect((r as ErrorResponse).message).toMatch(re);
    }
  });
});
