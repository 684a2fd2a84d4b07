// oclif reads flags only after the command id; users also write global flags first
// (`banger --socket S vm list`). Move leading global flags behind the command, before any `--`.
const GLOBAL_WITH_VALUE = new Set(['--socket', '--context']);
const GLOBAL_BOOLEAN = new Set(['--json']);

export function hoistGlobalFlags(argv: readonly string[]): string[] {
  const hoisted: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const a = argv[i]!;
    const name = a.split('=')[0]!;
    if (GLOBAL_WITH_VALUE.has(name)) {
      if (a.includes('=')) {
        hoisted.push(a);
        i += 1;
      } else {
        if (i + 1 >= argv.length) break;
        hoisted.push(a, argv[i + 1]!);
        i += 2;
      }
    } else if (GLOBAL_BOOLEAN.has(a)) {
      hoisted.push(a);
      i += 1;
    } else break;
  }
  if (hoisted.length === 0) return [...argv];
  const rest = argv.slice(i);
  const dd = rest.indexOf('--');
  return dd === -1 ? [...rest, ...hoisted] : [...rest.slice(0, dd), ...hoisted, ...rest.slice(dd)];
}
