import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The banger checkout this code runs from: the nearest ancestor of `start` holding a package.json
 * named banger. Works from src/ (run from source) and dist/src/ (built) alike, without hard-coding
 * how deep the caller sits; undefined when there is none (an unreadable or foreign package.json is
 * passed over).
 */
export function findRepoRoot(start: string = import.meta.dirname): string | undefined {
  for (let dir = start; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const parsed: unknown = JSON.parse(readFileSync(pkg, 'utf8'));
        if (typeof parsed === 'object' && parsed !== null && 'name' in parsed && parsed.name === 'banger')
          return dir;
      } catch {
        // Unreadable or malformed package.json: not ours, keep walking up.
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}
