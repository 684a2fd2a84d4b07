#!/usr/bin/env bash
# The test command: installs what it needs, then typecheck, lint, codegen check, build, unit and
# integration tests, and the smoke scenarios on real VMs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/deps.sh" --test
cd "$ROOT"
exec "$ROOT/scripts/npm" test
