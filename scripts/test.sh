#!/usr/bin/env bash
# Sets up, then runs the test suite (all but the tests marked `verl`, which build a separate
# virtual environment with verl: run them with `bash scripts/test.sh -m verl`).
# Extra arguments go to pytest. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false GDPO_STRICT_SKIPS=1
if [ $# -eq 0 ]; then set -- -m "not verl"; fi
exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider "$@"
