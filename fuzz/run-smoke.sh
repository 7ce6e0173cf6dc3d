#!/usr/bin/env bash
# Smoke-runs every fuzz target for a bounded time (CI and local use).
#
#   fuzz/run-smoke.sh [SECONDS]     # SECONDS per target, default 20
#
# Installs cargo-fuzz if it is missing, builds all targets once (optimised, debug
# assertions and overflow checks on, AddressSanitizer), then runs each target on a
# copy of its seed corpus in a temporary directory, so the repository is not changed.
# Prints one line per target; on a finding also the panic and the input (base64), and
# keeps the reproducer in fuzz/artifacts/<target>/ (ignored by git). Exits non-zero if
# any target found anything or could not run. docs/fuzzing.md has the details.
#
# Time on a 2-core machine: about 1 min to install cargo-fuzz, 5 to 6 min for the
# first build (less when fuzz/target is kept), then SECONDS per target (11 targets).
set -euo pipefail

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]   (a positive whole number of seconds per target)" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cargo_fuzz_version="0.13.2"
targets=(sip_message sip_endpoint sdp rtp dtmf srtp_unprotect sdes framing media_playout digest zrtp)

# cargo-fuzz drives nightly-only rustc flags (-Zsanitizer, sanitizer coverage); the
# stable toolchain accepts them when told it is bootstrapping.
export RUSTC_BOOTSTRAP=1

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in *":$cargo_bin:"*) ;; *) PATH="$cargo_bin:$PATH" ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
    if ! cargo install cargo-fuzz --locked --version "$cargo_fuzz_version" --quiet; then
        echo "fuzz: FAILED to install cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
        exit 1
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz: FAILED: cargo-fuzz installed but 'cargo fuzz' does not run" >&2
        exit 1
    fi
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
work="$(mktemp -d "${TMPDIR:-/tmp}/sotto-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

build_log="$work/build.log"
build_start=$SECONDS
# No -O: cargo-fuzz's default is the release profile *with* debug assertions and
# overflow checks (-O alone would turn them off).
if ! (cd "$fuzz_dir" && cargo fuzz build --target "$host" --target-dir "$fuzz_dir/target") \
    >"$build_log" 2>&1; then
    echo "fuzz: FAILED to build the fuzz targets; the build log ends:" >&2
    tail -n 40 "$build_log" >&2
    exit 1
fi
echo "fuzz: built ${#targets[@]} targets in $((SECONDS - build_start)) s; ${seconds} s each"

bin_dir="$fuzz_dir/target/$host/release"
failed=0
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    if [ -d "$fuzz_dir/corpus/$target" ]; then
        cp -R "$fuzz_dir/corpus/$target/." "$corpus/"
    fi
    artifacts="$fuzz_dir/artifacts/$target"
    mkdir -p "$artifacts"
    log="$work/$target.log"
    status=0
    # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: a memory blow-up is
    # a finding; the fuzzer stops by itself after -max_total_time.
    ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        timeout --kill-after=30 $((seconds + 120)) \
        "$bin_dir/$target" "$corpus" \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    found="$(grep -oE "(crash|leak|timeout|oom|slow-unit)-[0-9a-f]+" "$log" | tail -n 1 || true)"
    if [ "$status" -eq 0 ] && [ -z "$found" ]; then
        printf 'fuzz: %-15s %10s executions, no finding\n' "$target" "${execs:-?}"
        continue
    fi
    failed=1
    printf 'fuzz: %-15s %10s executions, FINDING (exit %s)\n' "$target" "${execs:-?}" "$status"
    grep -E "panicked at|^thread '|assertion|ERROR: |SUMMARY: |Test unit written" "$log" \
        | head -n 20 | sed 's/^/    /'
    if [ -n "$found" ] && [ -f "$artifacts/$found" ]; then
        echo "    reproducer: fuzz/artifacts/$target/$found ($(wc -c <"$artifacts/$found") bytes), base64:"
        head -c 4096 "$artifacts/$found" | base64 | sed 's/^/    /'
        echo "    replay: $bin_dir/$target fuzz/artifacts/$target/$found"
    else
        echo "    no reproducer written; the fuzzer's log ends:"
        tail -n 20 "$log" | sed 's/^/    /'
    fi
done
exit "$failed"
