#!/usr/bin/env bash
# Runs the whole test suite: formatting and lints first (cheap, and they fail fast), then
# every crate's unit and integration tests (the KVM ones run where /dev/kvm is usable and
# print SKIP lines where it is not; with MMURR_REQUIRE_KVM=1, as .ci/run sets on a machine
# with a usable /dev/kvm, a KVM test that cannot run fails instead), then a bounded fuzz run
# of the trace reader. The corpus of real guests (scripts/corpus.sh: Debian's cloud kernel, a
# busybox initramfs, SeaBIOS, fetched with apt-get into a cache outside the repository) is
# fetched first, and MMURR_REQUIRE_CORPUS=1 makes its tests fail rather than skip without it;
# MMURR_SKIP_CORPUS=1 (offline work) leaves it out and lets them SKIP.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
if command -v rustup >/dev/null; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed | grep -q "^$component"; then
            rustup component add "$component"
        fi
    done
fi
if [ "${MMURR_SKIP_CORPUS:-0}" != 1 ]; then
    scripts/corpus.sh
    export MMURR_REQUIRE_CORPUS=1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
fuzz/run-short.sh
