#!/usr/bin/env bash
# Runs the test suite N times in a row (default 3) while hogs load the machine: one busy loop
# per core, and a memory hog that keeps allocating, touching and freeing 2 GiB so that page
# faults stay slow. A test whose outcome depends on machine speed or load fails here.
# Usage: scripts/test_under_load.sh [RUNS] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shift || true
source scripts/setup_env.sh dev

hogs=()
for _ in $(seq "$(nproc)"); do
  python -c 'while True: pass' & hogs+=($!)
done
python -c '
while True:
  block = bytearray(2 * 2**30)  # zero-filled: every page is faulted in
  del block' & hogs+=($!)
trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT

for run in $(seq "$runs"); do
  echo "== run $run of $runs under load (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  began=$SECONDS
  python -m pytest -q "$@"
  echo "-- run $run passed in $((SECONDS - began)) s"
done
