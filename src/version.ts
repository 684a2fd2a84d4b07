import { readFileSync } from 'node:fs';

function findPackageJson(): string {
  // src/version.ts when run from source, dist/src/version.js when built.
  for (const rel of ['../package.json', '../../package.json']) {
    const url = new URL(rel, import.meta.url);
    try {
      const pkg = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'banger' && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0-unknown';
}

export const BANGER_VERSION: string = findPackageJson();
