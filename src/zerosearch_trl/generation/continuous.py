"""Continuous batching over a transformers model's own forward pass: requests join and leave a running batch.

``model.generate`` runs a fixed batch until its longest row stops: a row that ends early keeps its slot, and a new
request waits for the whole batch. :class:`ContinuousTransformersGenerator` decodes one token per step for every
running row, takes a finished row out at once and lets a waiting request in at the next step. It also keeps each
request's keys and values after it finishes (by ``key``): a multi-turn episode's next turn, whose input starts with
everything the last turn saw, is prefilled from where it stopped, so a turn never re-encodes its history.

Why not transformers' own continuous batching (``generate_batch``, paged attention)? Measured on the embedded
model on CPU (``benchmarks/bench_rollout.py``), it was about 2x slower than one static batched ``generate`` for the
same work, and it neither takes stop strings nor keeps a finished request's cache for the request that continues
it. This generator is plain PyTorch over the model's ``forward`` with a ``DynamicCache``, so it runs wherever the
model runs (CPU or one GPU, with or without LoRA adapters).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from zerosearch_trl.generation.base import Generation, GenerationParams, Prompt, truncate_at_stop
from zerosearch_trl.generation.transformers import encode_prompts, eos_token_ids


@dataclass
class _Row:
    """A request while it decodes: ``fed`` are the ids whose keys and values are cached (its input, then each
    generated token but the newest, which is fed at the next step)."""

    key: Hashable
    fed: list[int]
    params: GenerationParams
    generated: list[int] = field(default_factory=list)
    finish: str | None = None


class ContinuousTransformersGenerator:
    """In-process continuous batching with per-request KV caches kept across turns.

    Call :meth:`submit` whenever a request is ready and :meth:`step` to make progress: each step lets the waiting
    requests in, then decodes until a row finishes (or ``chunk`` tokens), and returns the finished rows. A request
    submitted under a ``key`` that finished before reuses that key's cache for the longest common prefix of the old
    and new inputs (call :meth:`release` when the key is done). :meth:`generate_ids` is the batch form, for callers
    that have all their prompts at once.

    Works for models whose cache layers are all full-attention ``DynamicLayer`` s (Llama, Qwen2, SmolLM, Mistral
    without a sliding window, ...); :func:`supports_continuous_batching` tells.

    Args:
        model: a causal LM (a PEFT model too); it is not put in eval mode, as ``generate`` does not.
        tokenizer: its tokenizer (stop strings are matched on decoded text).
        max_batch: rows decoded together; more requests wait for a free slot.
        chunk: decode steps per :meth:`step` at most, when no row finishes sooner.

    Example:
        >>> import zerosearch_trl as zs
        >>> model, tokenizer = zs.load_default_model()  # doctest: +SKIP
        >>> gen = ContinuousTransformersGenerator(model, tokenizer)  # doctest: +SKIP
        >>> gen.submit("a", tokenizer("The capital of France is")["input_ids"], zs.GenerationParams(max_new_tokens=5))  # doctest: +SKIP
        >>> while not gen.idle:  # doctest: +SKIP
        ...     for key, generation in gen.step():
        ...         print(key, generation.text)
    """

    name = "transformers-continuous"

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, max_batch: int = 64, chunk: int = 16
    ) -> None:
        if max_batch < 1 or chunk < 1:
            raise ValueError(f"max_batch and chunk must be >= 1, got {max_batch} and {chunk}.")
        self.model, self.tokenizer, self.max_batch, self.chunk = model, tokenizer, max_batch, chunk
        self.eos_ids = eos_token_ids(model, tokenizer)
        self._waiting: list[_Row] = []
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, width]: left padding 0, cached tokens 1
        self._kept: dict[Hashable, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self._lock = threading.RLock()
        self._generator: torch.Generator | None = None
        self._seed: int | None = None
        self.stats = {"decode_steps": 0, "row_steps": 0, "prefill_tokens": 0, "reused_tokens": 0}

    @property
    def idle(self) -> bool:
        """Whether no request is waiting or decoding."""
        return not self._waiting and not self._rows

    def submit(self, key: Hashable, input_ids: Sequence[int], params: GenerationParams) -> None:
        """Queue a request; it joins the running batch at the next :meth:`step`."""
        if not input_ids:
            raise ValueError(f"Request {key!r} has no input ids: a generation needs at least one token to follow.")
        if any(row.key == key for row in (*self._waiting, *self._rows)):
            raise ValueError(f"Request {key!r} is already running: a key is one request at a time.")
        if params.seed is not None and params.seed != self._seed:  # one stream per seed, not one per request
            self._generator = torch.Generator(device=self.model.device).manual_seed(params.seed)
            self._seed = params.seed
        self._waiting.append(_Row(key, list(input_ids), params))

    def release(self, key: Hashable) -> None:
        """Forget the cache kept for ``key`` (its episode is over)."""
        self._kept.pop(key, None)

    def reset(self) -> None:
        """Drop every request, waiting or running, and every kept cache (after a caller's failure, say)."""
        with self._lock:
            self._waiting, self._rows, self._cache, self._mask = [], [], None, None
            self._kept.clear()

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, Generation]]:
        """Admit the waiting requests, decode until a row finishes or ``chunk`` steps pass; return the finished
        rows as ``(key, Generation)``."""
        with self._lock:
            finished = self._admit()
            for _ in range(self.chunk):
                if finished or not self._rows:
                    break
                finished = self._decode()
            return [(row.key, self._result(row)) for row in finished]

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        """Generate one continuation per text prompt or chat (the :class:`TextGenerator` interface): a simulator
        can run on this generator."""
        with self._lock:
            return self.generate_ids(encode_prompts(self.tokenizer, prompts), params)

    def generate_ids(self, input_ids: Sequence[Sequence[int]], params: GenerationParams) -> list[Generation]:
        """Generate one continuation per input, all at once (the :class:`TransformersGenerator` interface)."""
        with self._lock:
            keys = [("generate_ids", i) for i in range(len(input_ids))]
            for key, ids in zip(keys, input_ids):
                self.submit(key, ids, params)
            results: dict[Hashable, Generation] = {}
            while len(results) < len(keys):
                results.update(self.step())
            for key in keys:
                self.release(key)
            return [results[key] for key in keys]

    # -- admission ---------------------------------------------------------------------------------------------

    def _admit(self) -> list[_Row]:
        """Prefill the waiting rows that fit, each from its kept cache if any, and merge them into the batch."""
        room = self.max_batch - len(self._rows)
        admitted, self._waiting = self._waiting[:room], self._waiting[room:]
        finished, joining = [], []
        for row in admitted:
            layers, logits = self._prefill(row)
            self._append(row, self._sample(logits, [row])[0])
            self.stats["row_steps"] += 1  # the first token comes from the prefill, as in ``generate``
            if row.finish is not None:
                self._keep(row, layers)
                finished.append(row)
            else:
                joining.append((row, layers))
        if joining:
            self._merge(joining)
        return finished

    def _prefill(self, row: _Row) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Run the model over what the row's kept cache lacks; return the row's layers and last logits."""
        old_ids, old_layers = self._kept.pop(row.key, ([], []))
        reuse = 0
        limit = min(len(old_ids), len(row.fed) - 1)  # at least one token is fed, for the next token's logits
        while reuse < limit and old_ids[reuse] == row.fed[reuse]:
            reuse += 1
        cache = DynamicCache(ddp_cache_data=[(k[:, :, :reuse], v[:, :, :reuse]) for k, v in old_layers] or None)
        new = row.fed[reuse:]
        device = self.model.device
        output = self.model(
            input_ids=torch.tensor([new], device=device),
            attention_mask=torch.ones(1, len(row.fed), dtype=torch.long, device=device),
            position_ids=torch.arange(reuse, len(row.fed), device=device).unsqueeze(0),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.stats["prefill_tokens"] += len(new)
        self.stats["reused_tokens"] += reuse
        return [(layer.keys, layer.values) for layer in output.cache.layers], output.logits[:, -1]

    def _merge(self, joining: list[tuple[_Row, list[tuple[torch.Tensor, torch.Tensor]]]]) -> None:
        """Left-pad the batch and the joining rows to one width and stack them."""
        width = max([self._width()] + [len(row.fed) for row, _ in joining])
        device = self.model.device
        masks = [] if self._mask is None else [F.pad(self._mask, (width - self._width(), 0))]
        masks += [
            torch.tensor([[0] * (width - len(row.fed)) + [1] * len(row.fed)], device=device) for row, _ in joining
        ]
        old = [] if self._cache is None else [(layer.keys, layer.values) for layer in self._cache.layers]
        stacked = []
        for index in range(len(joining[0][1])):
            parts = [old[index]] if old else []
            parts += [layers[index] for _, layers in joining]
            keys = torch.cat([_pad_left(k, width) for k, _ in parts])
            values = torch.cat([_pad_left(v, width) for _, v in parts])
            stacked.append((keys, values))
        self._cache = DynamicCache(ddp_cache_data=stacked)
        self._mask = torch.cat(masks)
        self._rows += [row for row, _ in joining]

    # -- decoding ----------------------------------------------------------------------------------------------

    def _decode(self) -> list[_Row]:
        """One token for every running row; finished rows leave the batch (their caches kept)."""
        device = self.model.device
        tokens = torch.tensor([[row.generated[-1]] for row in self._rows], device=device)
        self._mask = torch.cat([self._mask, torch.ones(len(self._rows), 1, dtype=self._mask.dtype, device=device)], 1)
        positions = torch.tensor([[len(row.fed)] for row in self._rows], device=device)
        output = self.model(
            input_ids=tokens,
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._cache = output.cache
        for row in self._rows:
            row.fed.append(row.generated[-1])
        next_tokens = self._sample(output.logits[:, -1], self._rows)
        for row, token in zip(self._rows, next_tokens):
            self._append(row, token)
        self.stats["decode_steps"] += 1
        self.stats["row_steps"] += len(self._rows)
        return self._evict()

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        """The next token of each row, with its own sampling parameters."""
        logits = logits.float()
        chosen = [0] * len(rows)
        groups: dict[tuple, list[int]] = {}
        for index, row in enumerate(rows):
            p = row.params
            groups.setdefault((p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty), []).append(index)
        for (temperature, top_p, top_k, min_p, penalty), indices in groups.items():
            scores = logits[indices]
            if penalty != 1.0:
                for line, index in enumerate(indices):
                    seen = torch.tensor(sorted(set(rows[index].fed + rows[index].generated)), device=scores.device)
                    picked = scores[line, seen]
                    scores[line, seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
            if temperature == 0:
                picks = scores.argmax(-1)
            else:
                warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
                if top_k:
                    warpers.append(TopKLogitsWarper(top_k))
                if top_p < 1.0:
                    warpers.append(TopPLogitsWarper(top_p))
                if min_p:
                    warpers.append(MinPLogitsWarper(min_p))
                scores = warpers(None, scores)
                picks = torch.multinomial(scores.softmax(-1), 1, generator=self._generator).squeeze(-1)
            for index, token in zip(indices, picks.tolist()):
                chosen[index] = token
        return chosen

    def _append(self, row: _Row, token: int) -> None:
        """Add a generated token and decide whether the row is finished: EOS, a stop string, or its budget."""
        row.generated.append(token)
        if token in self.eos_ids:
            row.finish = "stop"
        elif row.params.stop and self._stopped(row):
            row.finish = "stop"
        elif len(row.generated) >= row.params.max_new_tokens:
            row.finish = "length"

    def _stopped(self, row: _Row) -> bool:
        # A stop string completed by the newest token lies within the last few tokens: decode only those.
        tail = row.generated[-(max(len(s) for s in row.params.stop) + 2) :]
        return truncate_at_stop(self.tokenizer.decode(tail, skip_special_tokens=True), row.params.stop)[1]

    def _evict(self) -> list[_Row]:
        finished = [row for row in self._rows if row.finish is not None]
        if not finished:
            return []
        width = self._width()
        for index, row in enumerate(self._rows):
            if row.finish is not None:
                cached = len(row.fed)
                layers = [(layer.keys[index : index + 1, :, width - cached :].clone(),
                           layer.values[index : index + 1, :, width - cached :].clone()) for layer in self._cache.layers]  # fmt: skip
                self._keep(row, layers)
        keep = [i for i, row in enumerate(self._rows) if row.finish is None]
        self._rows = [self._rows[i] for i in keep]
        if not self._rows:
            self._cache = self._mask = None
            return finished
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask[index]
        start = int(mask.any(0).nonzero()[0])  # columns that are padding in every remaining row go
        self._mask = mask[:, start:]
        self._cache = DynamicCache(
            ddp_cache_data=[
                (layer.keys[index, :, start:], layer.values[index, :, start:]) for layer in self._cache.layers
            ]
        )
        return finished

    def _keep(self, row: _Row, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._kept[row.key] = (list(row.fed), layers)

    def _width(self) -> int:
        return 0 if self._mask is None else self._mask.shape[1]

    def _result(self, row: _Row) -> Generation:
        text, _ = truncate_at_stop(self.tokenizer.decode(row.generated, skip_special_tokens=True), row.params.stop)
        return Generation(text=text, finish_reason=row.finish or "length", token_ids=list(row.generated))


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``[batch, heads, length, dim]`` padded with zeros on the left of ``length`` to ``width``."""
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0)) if tensor.shape[2] < width else tensor


def supports_continuous_batching(model: PreTrainedModel) -> bool:
    """Whether :class:`ContinuousTransformersGenerator` can drive ``model``: every cache layer it builds is a
    full-attention ``DynamicLayer`` (no sliding window, no recurrent state)."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    try:
        cache = DynamicCache(config=config)
    except Exception:  # an architecture whose cache this version cannot build from its config
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)
