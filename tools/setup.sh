#!/usr/bin/env bash
# Installs what kitten needs to build and test on Debian 12, and nothing when all of it
# is present. Idempotent: `make run` and `make test` call it every time.
# Exit 0: everything present. Exit 2: packages missing and no way to install them here
# (the exact command to run is printed).
set -euo pipefail

packages=(
  g++ make cmake ninja-build ccache git
  llvm-14-dev libclang-14-dev libclang-cpp14-dev
  libyaml-cpp-dev libbenchmark-dev libgtest-dev libgmock-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
install=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${install[@]}"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo -n apt-get update -qq
  sudo -n env DEBIAN_FRONTEND=noninteractive "${install[@]}"
else
  echo "setup: missing packages and no root or passwordless sudo; run:" >&2
  echo "  sudo apt-get update && sudo ${install[*]}" >&2
  exit 2
fi
