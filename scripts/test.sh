#!/usr/bin/env bash
# Runs the whole test suite: every crate's unit and integration tests (the KVM ones run where
# /dev/kvm is usable and print SKIP lines where it is not), then a bounded fuzz run of the
# trace reader.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
cargo test --workspace --no-fail-fast
fuzz/run-short.sh
