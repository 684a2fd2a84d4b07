// Part: cli. The CLI's own start-up, which every command pays: `banger ping` (the real bin/banger,
// against bench/echo-server.ts on a temp socket, so the daemon's side costs next to nothing) and
// `banger --version`, against `node -e 0` on the same Node, in rounds that run the three in a
// rotated order. Wall time from spawn to exit, as a user waits for it.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startEcho } from './rpc.ts';
import { ratio, summarize, type Summary } from './stats.ts';
import { BIN, ROOT, runCmd } from './world.ts';

export interface CliResult {
  rounds: number;
  node: string;
  commands: { label: string; argv: string[] }[];
  /** Wall ms per command label (`node -e 0`, `banger --version`, `banger ping`). */
  ms: Record<string, Summary>;
  /** Median of each command over the median of `node -e 0` (target ≤ 1.5). */
  ratios: Record<string, number>;
  samples: Record<string, number[]>;
}

/** The Node bin/banger runs on (the pinned one), else this process's. */
export function cliNode(): string {
  const pinned = join(ROOT, '.tools/node/bin/node');
  return existsSync(pinned) ? pinned : process.execPath;
}

export async function runCli(opts: {
  rounds: number;
  dir: string;
  say: (l: string) => void;
}): Promise<CliResult> {
  const node = cliNode();
  const socket = join(opts.dir, 'cli-echo.sock');
  const commands = [
    { label: 'node -e 0', argv: [node, '-e', '0'], expect: /^$/ },
    { label: 'banger --version', argv: [BIN('banger'), '--version'], expect: /^banger\/\S+ / },
    {
      label: 'banger ping',
      argv: [BIN('banger'), 'ping', '--socket', socket],
      expect: /^pong from bangerd /,
    },
  ];
  const samples: Record<string, number[]> = Object.fromEntries(commands.map((c) => [c.label, []]));
  const stop = await startEcho(socket);
  try {
    // Two rounds not measured: the page cache, and the CLI's compile cache on a first run.
    for (let round = -2; round < opts.rounds; round++) {
      for (let k = 0; k < commands.length; k++) {
        const c = commands[(Math.max(round, 0) + k) % commands.length]!;
        const r = await runCmd(c.argv, { timeoutMs: 60_000 });
        if (r.code !== 0 || !c.expect.test(r.stdout))
          throw new Error(`${c.label}: exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(0, 300)}`);
        if (round >= 0) samples[c.label]!.push(r.ms);
      }
    }
  } finally {
    stop();
  }
  const ms = Object.fromEntries(commands.map((c) => [c.label, summarize(samples[c.label]!)]));
  const base = ms['node -e 0']!.median;
  const ratios = Object.fromEntries(
    commands.slice(1).map((c) => [c.label, ratio(ms[c.label]!.median, base)]),
  );
  opts.say(
    `  medians: ${commands.map((c) => `${c.label} ${ms[c.label]!.median} ms`).join(', ')}; ` +
      `ratios ${Object.entries(ratios)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}`,
  );
  return {
    rounds: opts.rounds,
    node,
    commands: commands.map(({ label, argv }) => ({ label, argv })),
    ms,
    ratios,
    samples: Object.fromEntries(
      Object.entries(samples).map(([k, v]) => [k, v.map((x) => Math.round(x * 10) / 10)]),
    ),
  };
}
