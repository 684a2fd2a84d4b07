// The proxy's side of build/egress-relay (native/egress-relay.c), user mode's guestfwd command:
// one relay process per guest connection, which hands the guest's request head to the proxy and
// waits for its decision. The proxy answers a relayed connection with either its own bytes
// (implicitly "stay": every HTTP answer starts with "HTTP/"), an explicit `\0stay\n`, or
// `\0direct IPV4 PORT UPLEN DOWNLEN BODY\n` + UPLEN bytes for the upstream + DOWNLEN bytes for
// the guest, after which the relay connects to the checked address itself and the proxy drops
// out of the data path. Only the proxy's first bytes can be control, and they come from the
// proxy's socket, so nothing the guest sends is ever read as control. The decision (policy,
// events, the rewritten head) stays here; the relay only moves bytes.
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { isIPv4, type Socket } from 'node:net';
import { findRepoRoot } from '../util/repo-root.ts';

/** What the relay writes first on every connection, before any guest byte. */
export const RELAY_HELLO = Buffer.from('\0banger-relay 1\n', 'latin1');
/** The relay's limits on the control message (native/egress-relay.c LINE_MAX_, BLOB_MAX, BODY_MAX). */
export const RELAY_MAX_BLOB = 65536;
export const RELAY_MAX_BODY = 1e15;

/** Connections whose other end is a relay that said hello (user mode's unix sockets only). */
const relayed = new WeakSet<object>();

export function isRelayed(socket: object): boolean {
  return relayed.has(socket);
}

/**
 * Whether the proxy may still hand `socket` back to its relay: a relay on the other end and
 * nothing written to it yet (a control message must be the proxy's first bytes).
 */
export function canHandBack(socket: Socket): boolean {
  return relayed.has(socket) && socket.bytesWritten === 0 && socket.writableLength === 0;
}

/** `\0stay\n`: the relay sends its held bytes on and relays raw through the proxy. */
export function stayMessage(): Buffer {
  return Buffer.from('\0stay\n', 'latin1');
}

export interface DirectOrder {
  ip: string;
  port: number;
  /** Bytes the relay writes upstream first (the rewritten request head). */
  up: Buffer;
  /** Bytes the relay writes to the guest once connected (CONNECT's 200). */
  down: Buffer;
  /** Guest bytes after the head that go upstream: a count (then the guest is not read again), or a tunnel. */
  body: number | 'tunnel';
}

/** The `direct` control message. Throws on anything the relay would refuse. Pure. */
export function directMessage(o: DirectOrder): Buffer {
  if (!isIPv4(o.ip)) throw new Error(`relay: not an IPv4 address: ${o.ip}`);
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new Error(`relay: bad port ${o.port}`);
  if (o.up.length > RELAY_MAX_BLOB || o.down.length > RELAY_MAX_BLOB)
    throw new Error('relay: control payload too long');
  if (o.body !== 'tunnel' && (!Number.isSafeInteger(o.body) || o.body < 0 || o.body > RELAY_MAX_BODY))
    throw new Error(`relay: bad body length ${String(o.body)}`);
  const line = `\0direct ${o.ip} ${o.port} ${o.up.length} ${o.down.length} ${o.body}\n`;
  return Buffer.concat([Buffer.from(line, 'latin1'), o.up, o.down]);
}

/**
 * Before a unix-socket connection reaches the HTTP parser: strip the relay's hello and mark the
 * socket, or, when the first bytes are not the hello (a VMM started before the relay existed,
 * still running socat), hand everything over unchanged. `then` runs once, with the socket's
 * unread bytes put back.
 */
export function takeHello(socket: Socket, then: () => void, timeoutMs = 30_000): void {
  let got = Buffer.alloc(0);
  // A connection that says nothing at all is not kept (the parser's own timeouts start later).
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  socket.once('close', () => clearTimeout(timer));
  const onData = (d: Buffer): void => {
    got = Buffer.concat([got, d]);
    const n = Math.min(got.length, RELAY_HELLO.length);
    const matches = got.subarray(0, n).equals(RELAY_HELLO.subarray(0, n));
    if (matches && got.length < RELAY_HELLO.length) return;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.pause();
    if (matches) relayed.add(socket);
    const rest = matches ? got.subarray(RELAY_HELLO.length) : got;
    if (rest.length > 0) socket.unshift(rest);
    then();
  };
  const onEnd = (): void => {
    clearTimeout(timer);
    socket.off('data', onData);
    if (got.length > 0 && !got.equals(RELAY_HELLO.subarray(0, got.length))) socket.unshift(got);
    then();
  };
  socket.on('data', onData);
  socket.once('end', onEnd);
}

/**
 * The relay binary: build/egress-relay under the repo root (scripts/build-addon.mjs builds it
 * in `npm run build`). From src/egress/ or dist/src/egress/ alike.
 */
let binary: string | undefined;

export function relayBinaryPath(): string {
  binary ??= findRelayBinary();
  return binary;
}

/** Throws a clear error when the relay was not built (a user-mode VM under a policy cannot start without it). */
export function assertRelayBuilt(path = relayBinaryPath()): void {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(
      `the egress relay ${path} is missing or not executable; run npm run build (it needs gcc)`,
    );
  }
}

/** Whether the relay is there and executable (assertRelayBuilt without the throw). */
export function relayBuilt(): boolean {
  try {
    assertRelayBuilt();
    return true;
  } catch {
    return false;
  }
}

function findRelayBinary(): string {
  const root = findRepoRoot(import.meta.dirname);
  if (root === undefined)
    throw new Error(`egress relay: cannot find the banger repo root above ${import.meta.dirname}`);
  return join(root, 'build', 'egress-relay');
}
