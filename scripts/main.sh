#!/usr/bin/env bash
# Sets up, then runs the main job on the built-in defaults; outputs go under ./outputs/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# --overwrite: the main job can be run again; each run replaces the last one in outputs/main.
exec "${PYTHON:-python3}" -m gdpo train --config configs/main.yaml --output-dir outputs/main --overwrite "$@"
