// The life of one server-side connection, apart from what is said on it: read the request line
// under a size and time limit, notice the client hanging up, and close so the descriptor is
// always released. The socket is never paused: a paused socket neither sees the client's EOF
// nor lets a client that writes an oversized request before reading finish its write, so it
// would hold its descriptor (and its kernel buffers) for good.
import type { Socket } from 'node:net';
import { MAX_REQUEST_BYTES } from './envelope.ts';
import { ErrorResponse } from './errors.ts';

export type ReadResult = { line: string } | { error: ErrorResponse };

/**
 * Read one request line. Whatever arrives after it (or after the limit or the deadline) is read
 * and dropped, so the client's writes always complete and its EOF is always seen.
 */
export function readRequestLine(socket: Socket, timeoutMs: number): Promise<ReadResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: ReadResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      chunks.length = 0;
      socket.off('end', onEnd);
      socket.off('error', onEnd);
      resolve(r);
    };
    const timer = setTimeout(
      () =>
        finish({
          error: new ErrorResponse('bad_request', `no complete request line within ${timeoutMs} ms`),
        }),
      timeoutMs,
    );
    const onData = (buf: Buffer): void => {
      if (done) return; // discarding
      const nl = buf.indexOf(0x0a);
      const take = nl === -1 ? buf : buf.subarray(0, nl);
      size += take.length;
      if (size > MAX_REQUEST_BYTES) {
        finish({ error: new ErrorResponse('bad_request', `request larger than ${MAX_REQUEST_BYTES} bytes`) });
        return;
      }
      chunks.push(take);
      if (nl !== -1) finish({ line: Buffer.concat(chunks).toString('utf8') });
    };
    const onEnd = (): void => {
      if (size === 0)
        finish({ error: new ErrorResponse('bad_request', 'connection closed before a request') });
      else finish({ line: Buffer.concat(chunks).toString('utf8') });
    };
    // Stays attached for the connection's whole life: it keeps the socket flowing.
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onEnd);
  });
}

/**
 * Resolves when the client has hung up: its side ended (EOF, which a half-close also is) or the
 * connection is gone. Seen as soon as it happens, because the socket is always read.
 */
export function hungUp(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.readableEnded || socket.destroyed) return resolve();
    const done = (): void => {
      socket.off('end', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('end', done);
    socket.on('close', done);
  });
}

export interface CloseTimes {
  /** After the last line is flushed: how long to wait for the client to end its side. */
  lingerMs: number;
  /** How long the last line may take to flush (a client that does not read it). */
  flushTimeoutMs: number;
}

/**
 * Write the last line, end our side and make sure the socket is destroyed: at once when the
 * line is flushed and the client has ended its side, otherwise when it does, and in any case
 * `lingerMs` after the flush (or `flushTimeoutMs` after the end, for a client that never reads).
 * The linger lets a client still writing an oversized request finish (its input is drained
 * meanwhile) and read the answer instead of failing with EPIPE. Resolves as soon as the line is
 * handed to the kernel (as a plain write would: the caller logs the call before the client can
 * act on the answer), or when the socket is gone.
 */
export function endAndClose(socket: Socket, lastLine: string, times: CloseTimes): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed || !socket.writable) {
      socket.destroy();
      return resolve();
    }
    let timer = setTimeout(() => socket.destroy(), times.flushTimeoutMs);
    const destroyIfDone = (): void => {
      if (socket.writableFinished && socket.readableEnded) socket.destroy();
    };
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('end', destroyIfDone);
    socket.once('finish', () => {
      clearTimeout(timer);
      timer = setTimeout(() => socket.destroy(), times.lingerMs);
      destroyIfDone();
    });
    socket.write(lastLine, () => resolve());
    socket.end();
  });
}

/** Write one frame; resolves when flushed, or at once when the socket can no longer be written. */
export function writeLine(socket: Socket, line: string): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed || !socket.writable) return resolve();
    socket.write(line, () => resolve());
  });
}
