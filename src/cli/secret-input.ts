// A secret's value from stdin, never echoed: piped input is read to EOF (one trailing newline
// dropped, as `echo` and editors add one); a terminal gets a prompt on stderr and one line typed
// with echo off (raw mode: the terminal shows nothing, not even stars).

/** At most this much is read (the daemon refuses more than 16 KiB anyway). */
const MAX_INPUT = 64 * 1024;

export async function readSecretValue(
  prompt: string,
  input: NodeJS.ReadStream = process.stdin,
): Promise<string> {
  if (input.isTTY === true) return readHiddenLine(prompt, input);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of input as AsyncIterable<Buffer | string>) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    size += b.length;
    if (size > MAX_INPUT) throw new Error(`the value on stdin is longer than ${MAX_INPUT} bytes`);
    chunks.push(b);
  }
  return stripOneNewline(Buffer.concat(chunks).toString('utf8'));
}

export function stripOneNewline(s: string): string {
  if (s.endsWith('\r\n')) return s.slice(0, -2);
  return s.endsWith('\n') ? s.slice(0, -1) : s;
}

function readHiddenLine(prompt: string, input: NodeJS.ReadStream): Promise<string> {
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let value = '';
    const done = (err?: Error): void => {
      input.setRawMode(false);
      input.pause();
      input.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (d: Buffer): void => {
      for (const ch of d.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done();
        if (ch === '\u0003') return done(new Error('interrupted'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    input.setRawMode(true);
    input.resume();
    input.on('data', onData);
  });
}
