// The RPC floor: a minimal unix-socket JSON server speaking banger's framing (one request line,
// one answer line, close), run as its own Node process like bangerd. It parses the request and
// answers `ping` with a ping-shaped result: no validation, dispatch, logging or op-id context.
// Usage: node bench/echo-server.ts SOCKET (prints "listening" when ready).
import { createServer } from 'node:net';
import { rmSync } from 'node:fs';

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: node bench/echo-server.ts SOCKET\n');
  process.exit(2);
}
rmSync(socketPath, { force: true });
const server = createServer((sock) => {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    const nl = buf.indexOf('\n');
    if (nl === -1) return;
    let opId: unknown;
    try {
      opId = (JSON.parse(buf.slice(0, nl)) as { op_id?: unknown }).op_id;
    } catch {
      opId = undefined;
    }
    const result = { pong: true, version: 'echo', protocol_version: 1 };
    sock.end(`${JSON.stringify({ ok: true, result, op_id: opId ?? 'op-000000' })}\n`);
  });
  sock.on('error', () => undefined);
});
server.listen(socketPath, () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
