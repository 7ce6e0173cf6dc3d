#!/usr/bin/env bash
# Install what building sotto needs beyond the Rust toolchain (Debian 12, as root):
#   cmake   the `opus` crate builds libopus (the reference Opus codec) from its
#           bundled source with cmake and links it statically (docs/decisions.md).
# Does nothing when everything is there already, so it is safe to run before every
# build; the README's run command and sip-tests/install.sh both call it.
set -euo pipefail
PKGS=(cmake)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} = 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deploy/setup.sh: run as root to install ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "deploy/setup.sh: installing ${missing[*]}"
apt-get -o DPkg::Lock::Timeout=300 update -q
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
