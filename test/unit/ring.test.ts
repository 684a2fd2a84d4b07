// The bounded ring behind the egress event rings (daemon and root helper).
import { describe, expect, it } from 'vitest';
import { Ring } from '../../src/util/ring.ts';

describe('Ring', () => {
  it('keeps the last `capacity` items oldest first, across many wraps', () => {
    const r = new Ring<number>(3);
    expect(r.toArray()).toEqual([]);
    expect(r.first()).toBeUndefined();
    r.push(1);
    r.push(2);
    expect(r.toArray()).toEqual([1, 2]);
    expect(r.first()).toBe(1);
    for (let i = 3; i <= 10; i++) r.push(i);
    expect(r.length).toBe(3);
    expect(r.toArray()).toEqual([8, 9, 10]);
    expect(r.first()).toBe(8);
    expect(r.last(2)).toEqual([9, 10]);
    expect(r.last(10)).toEqual([8, 9, 10]);
    expect(r.last(0)).toEqual([]);
  });
  it('refuses a capacity that is not a positive integer', () => {
    for (const c of [0, -1, 1.5, Number.NaN]) expect(() => new Ring(c)).toThrow(RangeError);
  });
});
