#!/usr/bin/env bash
# A bounded fuzz run of the trace reader for CI: 100k executions or 60 s, whichever comes
# first. Seeds the corpus from the golden traces; installs cargo-fuzz if it is missing.
# Usage: fuzz/run-short.sh [RUNS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-100000}"
seconds="${2:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
mkdir -p corpus/trace_reader
cp ../traces/corpus/*.mmurr ../traces/corpus/recorded/*.mmurr corpus/trace_reader/
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them. The
# address sanitizer needs nightly's instrumented std, so run without it.
RUSTC_BOOTSTRAP=1 cargo fuzz run trace_reader --sanitizer none -- \
    -runs="$runs" -max_total_time="$seconds" -max_len=65536
