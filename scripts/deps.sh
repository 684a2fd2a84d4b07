#!/usr/bin/env bash
# Installs what banger needs on a Debian 12 host: Debian packages (when missing), the pinned
# Node 24, and the npm dependencies (npm ci). Safe to rerun.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WITH_TEST_TOOLS=0
[ "${1:-}" = "--test" ] && WITH_TEST_TOOLS=1

PKGS=(qemu-system-x86 qemu-utils mmdebstrap debootstrap busybox-static socat e2fsprogs cpio zstd kmod uidmap
      openssh-client iproute2 nftables git ca-certificates gcc libc6-dev)
# docker-registry + skopeo: the OCI tests' real registry and what feeds it; apt-utils:
# apt-ftparchive for the fixtures' flat apt repository (test/fixtures/oci/prepare.sh); curl:
# smoke image_devcontainer fetches the forwarded port from inside the test namespace.
[ "$WITH_TEST_TOOLS" = 1 ] && PKGS+=(chromium util-linux procps docker-registry skopeo apt-utils curl)
# python3: the egress tests' fake DNS and HTTP services and probes (smoke egress*, integration
# egress-netns) are python3 -c one-liners; a minimal Debian 12 need not have it.
[ "$WITH_TEST_TOOLS" = 1 ] && PKGS+=(python3)
# slurmctld, slurmd, munge (+ slurm-client: srun, squeue, scancel): smoke slurm.test.ts runs its own
# two-node Slurm cluster in network namespaces (test/fixtures/slurm/cluster.ts).
[ "$WITH_TEST_TOOLS" = 1 ] && PKGS+=(slurmctld slurmd munge slurm-client)
# openssh-server: smoke remote.test.ts runs an sshd per "host" network namespace (its own config and
# host key, test/fixtures/remote/hosts.ts); the system's own sshd is not used.
[ "$WITH_TEST_TOOLS" = 1 ] && PKGS+=(openssh-server)

missing=()
# npm fetches the pinned Node; it usually comes with the machine's Node, not as a Debian package.
command -v npm >/dev/null || PKGS+=(npm)
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "deps: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system registry on :5000 (every interface); the tests run their own on
  # loopback, so one installed just now for them is stopped and disabled.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null &&
    [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
  # Same for the Slurm daemons: the test cluster runs its own, with its own config and munge key.
  if [[ " ${missing[*]} " == *" slurmctld "* ]] && command -v systemctl >/dev/null &&
    [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now slurmctld slurmd munge >/dev/null 2>&1 || true
  fi
  # And sshd: the remote smoke runs one per test namespace; a system sshd on :22 of every interface
  # is not something the test install should leave behind.
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null &&
    [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
fi

"$ROOT/scripts/ensure-node.sh"
cd "$ROOT"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "deps: npm ci" >&2
  "$ROOT/scripts/npm" ci --no-audit --no-fund >/dev/null
fi
