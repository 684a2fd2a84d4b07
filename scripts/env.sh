# Source this to put the project's pinned Node first on PATH (npm then runs on it too).
BANGER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$BANGER_ROOT/.tools/node/bin:$BANGER_ROOT/node_modules/.bin:$PATH"
