// A bounded ring: the last `capacity` items, oldest dropped first, in O(1) per push (an array
// that shifts is O(n) per push once full). The egress event rings of the daemon
// (src/egress/events.ts) and of the root helper's kernel-log reader (src/hostnet/egress-log.ts)
// both keep one.
export class Ring<T> {
  readonly capacity: number;
  private readonly items: T[] = [];
  /** Index of the oldest item once the ring is full. */
  private start = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`ring capacity ${capacity}`);
    this.capacity = capacity;
  }

  get length(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (this.items.length < this.capacity) this.items.push(item);
    else {
      this.items[this.start] = item;
      this.start = (this.start + 1) % this.capacity;
    }
  }

  /** The oldest item kept, if any. */
  first(): T | undefined {
    return this.items[this.start];
  }

  /** Every item kept, oldest first. */
  toArray(): T[] {
    return [...this.items.slice(this.start), ...this.items.slice(0, this.start)];
  }

  /** The newest `n` items, oldest first. */
  last(n: number): T[] {
    // A poll with nothing new asks for none: no copy of the whole ring.
    if (n <= 0) return [];
    const all = this.toArray();
    return all.slice(Math.max(0, all.length - n));
  }
}
