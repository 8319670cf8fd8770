#!/usr/bin/env bash
# Runs the test suite in the project's own environment (.venv, created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh dev
exec python -m pytest -q "$@"
