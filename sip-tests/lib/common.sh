# shellcheck shell=bash
# Helpers shared by sip-tests/run and sip-tests/lib/*.sh.  Source it.
set -o pipefail
SIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
SIPT_LIB="$SIPT_DIR/lib"
# Debian's python3 has numpy; a pyenv/venv python3 earlier in PATH may not.
if [ -z "${PY:-}" ]; then
  if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi
fi

info() { echo "---- $*" >&2; }

# Refuse anything that is not loopback (127.0.0.0/8).
is_loopback() { case "$1" in 127.*) return 0 ;; *) return 1 ;; esac; }

# port_free PORT -> true if nothing listens on UDP or TCP PORT on any address
port_free() { ! ss -Hlnu "sport = :$1" | grep -q . && ! ss -Hlnt "sport = :$1" | grep -q .; }

# udp_bound PORT -> true if something has UDP PORT bound
udp_bound() { ss -Hlnu "sport = :$1" | grep -q .; }

# wait_udp PORT SECONDS -> wait until a UDP port is bound
wait_udp() { local i; for ((i = 0; i < ${2:-10} * 10; i++)); do udp_bound "$1" && return 0; sleep 0.1; done; return 1; }

# tcp_listening PORT -> true if something listens on TCP PORT
tcp_listening() { ss -Hlnt "sport = :$1" | grep -q .; }

# wait_tcp PORT SECONDS -> wait until a TCP port is listening
wait_tcp() { local i; for ((i = 0; i < ${2:-10} * 10; i++)); do tcp_listening "$1" && return 0; sleep 0.1; done; return 1; }

# mk_tone FREQ SECONDS OUT.wav -> 48 kHz mono s16 (what baresip's aufile source wants).
# TONE_VOL (default 0.25) keeps the sum of several callers below clipping in a mix.
mk_tone() { sox -D -n -r 48000 -c 1 -b 16 "$3" synth "$2" sine "$1" vol "${TONE_VOL:-0.25}"; }
