#!/usr/bin/env bash
# Installs what mmurr needs to build and test on a fresh Debian machine, then builds it.
#   cmake, libclang-dev : build the Unicorn engine for the emu backend (mmurr-emu)
#   gdb, tmux, binutils : the gdb-server tests, the TUI end-to-end test, the multiboot test kernel
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in cmake libclang-dev gdb tmux binutils; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ "${1:-}" != "--no-build" ]; then
    echo "setup: building mmurr and mmurr-emu (release)"
    cargo build --release --workspace --bins
fi
