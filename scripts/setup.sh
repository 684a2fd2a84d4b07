#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install, build, start bangerd, build the default
# image, warm it, boot a sandbox from the warm template and run `uname -a` in it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/deps.sh"
"$ROOT/scripts/npm" run build >/dev/null
# The version from `banger version --json` (pretty-printed JSON: parsed, not pattern-matched).
VERSION="$("$ROOT/bin/banger" version --json 2>/dev/null | "$ROOT/.tools/node/bin/node" -e \
  'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).version))' \
  2>/dev/null || true)"
echo "setup: built banger ${VERSION:-(version unknown: bin/banger version --json failed)}"

SOCKET="${BANGER_SOCKET:-$("$ROOT/.tools/node/bin/node" -e "import('$ROOT/dist/src/paths.js').then(m => console.log(m.defaultDaemonSocket()))")}"
STATE="${BANGER_STATE_DIR:-$("$ROOT/.tools/node/bin/node" -e "import('$ROOT/dist/src/paths.js').then(m => console.log(m.defaultStateDir()))")}"
export BANGER_SOCKET="$SOCKET"
if ! "$ROOT/bin/banger" ping >/dev/null 2>&1; then
  mkdir -p "$STATE"
  echo "setup: starting bangerd (socket $SOCKET, state $STATE, log $STATE/bangerd.log)"
  # --quiet: the JSON log goes to bangerd.log only; bangerd.stderr keeps what is not logged there
  # (a failure to start, a crash), instead of a second copy of every line.
  nohup "$ROOT/bin/bangerd" --socket "$SOCKET" --state-dir "$STATE" --helper-socket none --quiet \
    >>"$STATE/bangerd.stderr" 2>&1 &
  for _ in $(seq 1 100); do "$ROOT/bin/banger" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
"$ROOT/bin/banger" daemon status
"$ROOT/bin/banger" image build
# A warm template of the default spec: every later sandbox of that spec starts from it (about a
# second to SSH instead of a full boot).
"$ROOT/bin/banger" image warm
NAME="hello-$(date +%s)"
"$ROOT/bin/banger" vm create --name "$NAME"
"$ROOT/bin/banger" vm ssh "$NAME" -- uname -a
echo
echo "setup: done. The sandbox $NAME is running: bin/banger vm ssh $NAME"
echo "       bangerd keeps running in the background (bin/banger daemon status)."
