#!/usr/bin/env bash
# The test command: installs what it needs, then typecheck, lint, codegen check, build, unit and
# integration tests, and the smoke scenarios on real VMs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/deps.sh" --test
cd "$ROOT"
# The OCI fixtures (a Debian minbase tarball, a flat apt repository, image layouts): built from
# Debian's archive once and cached; needs root. The registry integration test's minbase case and
# the smoke image scenarios use them (smoke's global setup would also make them).
if [ "$(id -u)" = 0 ]; then "$ROOT/test/fixtures/oci/prepare.sh" >/dev/null; fi
exec "$ROOT/scripts/npm" test
