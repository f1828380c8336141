#!/usr/bin/env bash
# One command from a fresh clone to the seed-bug demo: install, build, record, show.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/release/mmurr demo "$@"
