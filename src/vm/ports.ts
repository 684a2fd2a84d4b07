// A free TCP port on 127.0.0.1 for user-mode SSH forwarding. The kernel picks it; we remember the
// ports handed out but not yet bound by a VMM, so two concurrent creates never get the same one.
import { createServer } from 'node:net';

const reserved = new Set<number>();

export function reservePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => {
        if (!port || reserved.has(port)) return void reservePort().then(resolve, reject);
        reserved.add(port);
        resolve(port);
      });
    });
  });
}

export function releasePort(port: number): void {
  reserved.delete(port);
}
