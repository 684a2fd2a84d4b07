// Talk to a server byte by byte, the way a hostile or broken client would.
import { connect } from 'node:net';

export function rawExchange(
  socketPath: string,
  payload: string | Buffer,
  opts: { end?: boolean; timeoutMs?: number } = {},
): Promise<{ lines: unknown[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ lines: parse(buf), closed: false });
    }, opts.timeoutMs ?? 5000);
    s.setEncoding('utf8');
    s.on('connect', () => {
      s.write(payload);
      if (opts.end) s.end();
    });
    s.on('data', (d: string) => (buf += d));
    s.on('error', (e) => {
      clearTimeout(timer);
      if (buf) resolve({ lines: parse(buf), closed: true });
      else reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ lines: parse(buf), closed: true });
    });
  });
}

function parse(buf: string): unknown[] {
  return buf
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as unknown);
}
