// The guest's readiness channel: a virtio-serial port whose host end is a unix socket
// (agent.sock). The guest agent writes "banger-userspace" when userspace is up and
// "banger-ready boot_id=<id>" once sshd accepts connections, and answers "ping" with the ready
// line again, so a reconnecting daemon can ask.
import { connect } from 'node:net';

export interface AgentState {
  userspace: boolean;
  ready: boolean;
  bootId?: string;
}

/**
 * Connect to the agent socket and wait until the guest says it is ready (or the deadline or
 * signal ends the wait). `onLine` sees every line (progress).
 */
export function waitForAgentReady(
  socketPath: string,
  opts: { timeoutMs: number; signal?: AbortSignal; onLine?: (line: string) => void; alive?: () => boolean },
): Promise<AgentState> {
  const state: AgentState = { userspace: false, ready: false };
  const deadline = Date.now() + opts.timeoutMs;
  return new Promise((resolve) => {
    let done = false;
    let sock: ReturnType<typeof connect> | undefined;
    let pinger: NodeJS.Timeout | undefined;
    let retry: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (done) return;
      done = true;
      if (pinger) clearInterval(pinger);
      if (retry) clearTimeout(retry);
      clearTimeout(overall);
      if (watchdog) clearInterval(watchdog);
      opts.signal?.removeEventListener('abort', finish);
      sock?.destroy();
      resolve(state);
    };
    const overall = setTimeout(finish, Math.max(0, deadline - Date.now()));
    // `alive` is asked again every second, connected or not (a stuck boot keeps the socket open).
    const watchdog = opts.alive
      ? setInterval(() => {
          if (opts.alive && !opts.alive()) finish();
        }, 1000)
      : undefined;
    opts.signal?.addEventListener('abort', finish, { once: true });
    const attempt = (): void => {
      if (done) return;
      if (opts.alive && !opts.alive()) return finish();
      let buf = '';
      const s = connect(socketPath);
      sock = s;
      s.setEncoding('utf8');
      s.on('connect', () => {
        s.write('ping\n');
        pinger = setInterval(() => s.write('ping\n'), 1000);
      });
      s.on('data', (d: string) => {
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) !== -1) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          opts.onLine?.(line);
          if (line === 'banger-userspace') state.userspace = true;
          const m = /^banger-ready boot_id=([0-9a-f-]{36})$/.exec(line);
          if (m) {
            state.userspace = true;
            state.ready = true;
            state.bootId = m[1];
            return finish();
          }
        }
      });
      const again = (): void => {
        if (pinger) clearInterval(pinger);
        pinger = undefined;
        if (!done) retry = setTimeout(attempt, 200);
      };
      s.on('error', () => undefined); // 'close' follows and retries
      s.on('close', again);
    };
    attempt();
  });
}
