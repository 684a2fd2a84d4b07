// The smoke suite's named scenarios (issue 5): at least 21, each id unique, and each selectable
// alone with `npm run smoke -- -t ID` (no id may match another scenario's name).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SMOKE = fileURLToPath(new URL('../smoke', import.meta.url));

/** Every test title in the smoke files, and the scenario ids among them (`id: description`). */
function smokeTitles(): { titles: string[]; scenarios: [string, string][] } {
  const titles: string[] = [];
  for (const f of readdirSync(SMOKE).filter((n) => n.endsWith('.test.ts'))) {
    const src = readFileSync(join(SMOKE, f), 'utf8');
    for (const m of src.matchAll(/\bit(?:\.\w+)?\(\s*(['"`])(.*?)\1/g)) titles.push(m[2]!);
  }
  const scenarios = titles.flatMap((t): [string, string][] => {
    const m = /^([a-z][a-z0-9_]*): /.exec(t);
    return m ? [[m[1]!, t]] : [];
  });
  return { titles, scenarios };
}

describe('smoke scenarios', () => {
  const { titles, scenarios: all } = smokeTitles();

  it('there are at least 21 named scenarios, ids unique', () => {
    const ids = all.map(([id]) => id);
    expect(ids.length).toBeGreaterThanOrEqual(21);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('the issue’s list is covered', () => {
    const ids = new Set(all.map(([id]) => id));
    for (const id of [
      'bare_run',
      'exit_code',
      'workspace_run',
      'include_untracked',
      'dry_run',
      'rm_interrupt',
      'detach_exec',
      'concurrent_runs',
      'invalid_spec',
      'workspace_stop_start',
      'vm_restart',
      'vm_kill',
      'vm_prune',
      'vm_set',
      'workspace_export',
      'vm_logs',
      'ssh_host_key',
      'daemon_restart',
      'create_cancel',
      'op_id',
      'bridge_dns',
    ])
      expect(ids, id).toContain(id);
  });

  it('-t ID selects exactly one scenario', () => {
    for (const [id] of all) {
      expect(
        titles.filter((t) => t.includes(id)),
        id,
      ).toHaveLength(1);
    }
  });
});
