#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 60), starting from the seed corpus
# kept in fuzz/corpus/<target>/. New inputs libFuzzer finds go to fuzz/target/corpus/<target>/
# (kept between runs, not committed; copy an interesting one into fuzz/corpus/ to keep it).
# A crash stops the run with its input in fuzz/artifacts/<target>/: turn it
# into a regression test in the crate that owns the parser, then fix the parser.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzzing needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzzing needs cargo-fuzz: cargo install cargo-fuzz" >&2
    exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/target/corpus/$t"
    echo "== $t: ${seconds}s"
    # -max_len: payloads past the broker's max_packet_size (128 KiB) never reach a parser.
    log="$(mktemp)"
    rc=0
    (cd fuzz && cargo +nightly fuzz run "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=131072 -print_final_stats=1) >"$log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|Test unit written|thread .* panicked)' "$log" || tail -n 20 "$log"
    rm -f "$log"
    if [ "$rc" != 0 ]; then
        echo "!! $t: exit $rc (a crash leaves its input in fuzz/artifacts/$t/)" >&2
        status=1
    fi
done
exit $status
