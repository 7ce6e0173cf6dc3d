#!/usr/bin/env bash
# Install the Debian 12 packages sip-tests/run needs (run as root).
# Does nothing when all of them are installed already.
#   sip-tester     SIPp 3.6 (with pcap play)
#   baresip-core   baresip + the aufile, sndfile, ctrl_tcp, g711, srtp modules
#   sox            tone WAVs for the baresip callers
#   python3, python3-numpy   pcap generator, SIPp CSV summary, FFT audio check
#   iproute2       ss (port checks)
#   coreutils      timeout
#   strace         tests/sandbox.rs: no file is written once the sandbox is up
#   libsrtp2-dev, gcc   tests/srtp_interop.rs: byte-for-byte interop with C libsrtp2;
#                  sip-tests/lib/srtp_shim.c: libsrtp2 SRTP for sip_ua.py (AES-GCM calls)
#   tshark         sip-tests: proves the audio on the wire is encrypted
#   openssl        sip-tests/selftest: certificate for the SIP/TLS stand-in
#   kamailio, kamailio-tls-modules   sip-tests kamailio_did / kamailio_tls_did: the
#                  bridge behind a SIP proxy (5.6, Debian 12), also over TLS
#   linphone-cli   sip-tests linphonec_zrtp: linphonec 5.1 with ZRTP (bzrtp)
# The bridge itself is built with cargo (Rust toolchain, not installed here); what
# its build needs beyond Rust (cmake for libopus) comes from deploy/setup.sh, run first.
set -euo pipefail
"$(dirname "${BASH_SOURCE[0]}")/../deploy/setup.sh"
PKGS=(sip-tester baresip-core sox python3 python3-numpy iproute2 coreutils)
PKGS+=(strace libsrtp2-dev gcc libc6-dev tshark openssl kamailio kamailio-tls-modules)
PKGS+=(linphone-cli)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} = 0 ]; then
  echo "sip-tests/install.sh: all packages present (${PKGS[*]})"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "sip-tests/install.sh: must run as root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; the answer does not matter here.
echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
echo "sip-tests/install.sh: installing ${missing[*]}"
apt-get -o DPkg::Lock::Timeout=300 update -q
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
