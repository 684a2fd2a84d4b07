// A tiny DNS client for the smoke tests, run inside the namespace:
//   node test/smoke/dns-query.ts NAME [PORT] [SERVER]
// prints {"rcode": N, "answers": ["A.B.C.D", ...]} for an A query.
import { createSocket } from 'node:dgram';

const [name = '', port = '5354', server = '127.0.0.1'] = process.argv.slice(2);
const labels = name.split('.').filter((l) => l !== '');
const q = Buffer.concat([
  Buffer.from([0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]),
  ...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])),
  Buffer.from([0, 0, 1, 0, 1]),
]);
const s = createSocket('udp4');
const timer = setTimeout(() => {
  process.stdout.write(JSON.stringify({ error: 'timeout' }) + '\n');
  process.exit(2);
}, 3000);
s.on('message', (m) => {
  clearTimeout(timer);
  const rcode = m.readUInt16BE(2) & 0xf;
  const an = m.readUInt16BE(6);
  let off = q.length; // the question is echoed verbatim
  const answers: string[] = [];
  for (let i = 0; i < an; i++) {
    while (m[off] !== 0) off += (m[off] as number) + 1;
    off += 1;
    const type = m.readUInt16BE(off);
    const len = m.readUInt16BE(off + 8);
    if (type === 1) answers.push([...m.subarray(off + 10, off + 14)].join('.'));
    off += 10 + len;
  }
  process.stdout.write(JSON.stringify({ rcode, answers }) + '\n');
  s.close();
});
s.send(q, Number(port), server);
