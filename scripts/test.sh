#!/usr/bin/env bash
# Sets up, then runs the test suite (all but the tests marked `verl` and `bfcl_reference`, which
# build a separate virtual environment with verl / with BFCL's checker and its API clients: run
# them with `bash scripts/test.sh -m verl` / `-m bfcl_reference`; .ci/run does).
# Extra arguments go to pytest. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false GDPO_STRICT_SKIPS=1
if [ $# -eq 0 ]; then set -- -m "not verl and not bfcl_reference"; fi
exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider "$@"
