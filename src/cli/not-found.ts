// `banger vm lst`: oclif's own answer is a raw "command vm:lst not found". This builds the line
// every other CLI error has (`error: unknown command "vm lst"; did you mean "vm list"?`) from the
// id oclif could not find and the commands and topics it knows.

/** Edit distance with adjacent transpositions counted as one edit (`lsit` is one from `list`). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** Whether every character of `short` appears in `long` in order (`ls` in `list`). */
function subsequence(short: string, long: string): boolean {
  let i = 0;
  for (const c of long) if (c === short[i]) i += 1;
  return i === short.length;
}

export interface Suggestion {
  /** The words the user typed that name the unknown command, space-separated. */
  typed: string;
  /** The closest real command, space-separated, if one is close enough to be a typo. */
  suggestion?: string;
}

/**
 * `id` is oclif's colon-joined id, which may carry positional words after the command
 * (`vm:lst:foo` for `banger vm lst foo`). A command is suggested when the typed words in the
 * same positions are within half the length of its differing words in edits.
 */
export function suggestCommand(
  id: string,
  commandIds: readonly string[],
  topicIds: readonly string[],
): Suggestion {
  const typed = id.split(':').filter(Boolean);
  let best: { cmd: string[]; dist: number; seq: boolean } | undefined;
  for (const cid of commandIds) {
    const cmd = cid.split(':');
    if (cmd.length > typed.length) continue;
    const words = typed.slice(0, cmd.length);
    const dist = editDistance(words.join(' '), cmd.join(' '));
    // Judged against the words that differ: a long shared topic must not excuse a wild guess.
    const same = cmd.findIndex((w, i) => w !== words[i]);
    if (dist > Math.max(1, Math.floor(cmd.slice(same).join(' ').length / 2))) continue;
    const seq = subsequence(words.at(-1)!, cmd.at(-1)!);
    const better =
      !best ||
      dist < best.dist ||
      (dist === best.dist && seq && !best.seq) ||
      (dist === best.dist && seq === best.seq && cmd.join(' ') < best.cmd.join(' '));
    if (better) best = { cmd, dist, seq };
  }
  if (best) return { typed: typed.slice(0, best.cmd.length).join(' '), suggestion: best.cmd.join(' ') };
  // No close command: name the words up to the first one that is not a known topic.
  const topics = new Set(topicIds);
  let k = 0;
  while (k < typed.length - 1 && topics.has(typed.slice(0, k + 1).join(':'))) k += 1;
  return { typed: typed.slice(0, k + 1).join(' ') };
}

/** The message of the `error:` line (no prefix); `bin` is the CLI's name for the help hint. */
export function unknownCommandMessage(s: Suggestion, bin: string): string {
  if (s.suggestion) return `unknown command "${s.typed}"; did you mean "${s.suggestion}"?`;
  const topic = s.typed.split(' ').slice(0, -1).join(' ');
  return `unknown command "${s.typed}"; see ${bin}${topic ? ` ${topic}` : ''} --help`;
}
