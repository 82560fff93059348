"""Continuous batching over a transformers model's own forward pass: requests join and leave a running batch.

``model.generate`` runs a fixed batch until its longest row stops: a row that ends early keeps its slot, and a new
request waits for the whole batch. :class:`ContinuousTransformersGenerator` decodes one token per step for every
running row, takes a finished row out at once and lets a waiting request in at the next step. It also keeps each
request's keys and values after it finishes (by ``key``): a multi-turn episode's next turn, whose input starts with
everything the last turn saw, is prefilled from where it stopped, so a turn never re-encodes its history.

Why not transformers' own continuous batching (``generate_batch``, paged attention)? Measured on the embedded
model on CPU (``benchmarks/bench_rollout.py``), it was about 2x slower than one static batched ``generate`` for the
same work, and it neither takes stop strings nor keeps a finished request's cache for the request that continues
it. This generator is plain PyTorch over the model's ``forward``, so it runs wherever the model runs (CPU or one
GPU, with or without LoRA adapters), with its own KV store (:mod:`~zerosearch_trl.generation.slots`), where rows
join, grow and leave in place instead of being copied at every step.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from zerosearch_trl.generation.base import (
    Generation,
    GenerationParams,
    Prompt,
    params_per_prompt,
    request_params,
    truncate_at_stop,
)
from zerosearch_trl.generation.slots import slot_cache, swap_remove
from zerosearch_trl.generation.transformers import encode_prompts, eos_token_ids, exponential_race, sampling_warpers


@dataclass
class _Row:
    """A request while it decodes: ``fed`` are the ids whose keys and values are cached (its input, then each
    generated token but the newest, which is fed at the next step); ``generator`` its own sampling draws when
    seeded."""

    key: Hashable
    fed: list[int]
    params: GenerationParams
    generator: torch.Generator | None = None
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
    per_prompt_seeds = True  # generate() takes a seed per prompt

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, max_batch: int = 64, chunk: int = 16
    ) -> None:
        if max_batch < 1 or chunk < 1:
            raise ValueError(f"max_batch and chunk must be >= 1, got {max_batch} and {chunk}.")
        self.model, self.tokenizer, self.max_batch, self.chunk = model, tokenizer, max_batch, chunk
        self.eos_ids = eos_token_ids(model, tokenizer)
        self._waiting: list[_Row] = []
        self._rows: list[_Row] = []
        self._cache: Cache | None = None  # of SlotLayers: rows join and leave in place
        self._mask: torch.Tensor | None = None  # [rows, width]: left padding 0, cached tokens 1
        self._kept: dict[Hashable, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self._lock = threading.RLock()
        self.stats = {"decode_steps": 0, "row_steps": 0, "prefill_tokens": 0, "reused_tokens": 0,
                      "prefill_seconds": 0.0, "decode_seconds": 0.0}  # fmt: skip

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
        # A seeded request draws from its own stream, so its tokens do not depend on which rows decode beside it.
        generator, seed = None, request_params(params, key, input_ids).seed
        if seed is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(seed)
        self._waiting.append(_Row(key, list(input_ids), params, generator))

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
            start = time.perf_counter()
            finished = self._admit()
            decoding = time.perf_counter()
            for _ in range(self.chunk):
                if finished or not self._rows:
                    break
                finished = self._decode()
            self.stats["prefill_seconds"] += decoding - start
            self.stats["decode_seconds"] += time.perf_counter() - decoding
            return [(row.key, self._result(row)) for row in finished]

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams, seeds: Sequence[int | None] | None = None
    ) -> list[Generation]:
        """Generate one continuation per text prompt or chat (the :class:`TextGenerator` interface): a simulator
        can run on this generator. ``seeds``: one per prompt (``None``: ``params.seed``), see
        :meth:`generate_ids`."""
        with self._lock:
            return self.generate_ids(encode_prompts(self.tokenizer, prompts), params, seeds)

    def generate_ids(
        self, input_ids: Sequence[Sequence[int]], params: GenerationParams, seeds: Sequence[int | None] | None = None
    ) -> list[Generation]:
        """Generate one continuation per input, all at once (the :class:`TransformersGenerator` interface).

        ``seeds`` gives each input its own seed (``None`` keeps ``params.seed``): a seeded input samples the same
        tokens whatever inputs it comes with."""
        with self._lock:
            each = params_per_prompt(params, seeds, len(input_ids))
            # A seeded input's key (hence its sampling stream) is its own seed, not its place in the batch.
            occurrences: Counter[int] = Counter()
            keys = []
            for i, seed in enumerate(seeds or [None] * len(input_ids)):
                keys.append(("generate_ids", i) if seed is None else ("seeded", seed, occurrences[seed]))
                occurrences[seed] += 1
            for key, ids, one in zip(keys, input_ids, each):
                self.submit(key, ids, one)
            results: dict[Hashable, Generation] = {}
            while len(results) < len(keys):
                results.update(self.step())
            for key in keys:
                self.release(key)
            return [results[key] for key in keys]

    # -- admission ---------------------------------------------------------------------------------------------

    def _admit(self) -> list[_Row]:
        """Prefill the waiting rows that fit in one batched forward pass, each from its kept cache if any, and merge
        the unfinished ones into the running batch."""
        room = self.max_batch - len(self._rows)
        admitted, self._waiting = self._waiting[:room], self._waiting[room:]
        if not admitted:
            return []
        layers, mask, logits = self._prefill(admitted)
        finished, joining = [], []
        for index, (row, token) in enumerate(zip(admitted, self._sample(logits, admitted))):
            self._append(row, token)
            self.stats["row_steps"] += 1  # the first token comes from the prefill, as in ``generate``
            if row.finish is None:
                joining.append(index)
            else:
                self._keep(row, _row_layers(layers, mask, index))
                finished.append(row)
        if joining:
            index = torch.tensor(joining, device=mask.device)
            self._merge([(k[index], v[index]) for k, v in layers], mask[index], [admitted[i] for i in joining])
        return finished

    def _prefill(self, rows: list[_Row]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """One forward pass over what each row's kept cache lacks.

        Row ``i`` keeps ``c_i`` cached tokens and feeds ``s_i`` new ones. The kept caches are left-padded to the
        longest, the new tokens left-padded to the longest and placed after them, so every row's last column is its
        last real token (whose logits sample its first new token); the padding in between is masked out and skipped
        when the row's cache is kept again (:func:`_row_layers`). Returns the layers, the ``[rows, width]`` mask of
        real tokens and the last logits."""
        reused, kept = [], []
        for row in rows:
            old_ids, old_layers = self._kept.pop(row.key, ([], []))
            reuse, limit = 0, min(len(old_ids), len(row.fed) - 1)  # one token at least is fed, for its logits
            while reuse < limit and old_ids[reuse] == row.fed[reuse]:
                reuse += 1
            reused.append(reuse)
            kept.append([(k[:, :, :reuse], v[:, :, :reuse]) for k, v in old_layers])
        device = self.model.device
        cached, new = max(reused), max(len(row.fed) - r for row, r in zip(rows, reused))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids, mask, positions = [], [], []
        for row, reuse in zip(rows, reused):
            fresh = row.fed[reuse:]
            ids.append([pad] * (new - len(fresh)) + fresh)
            mask.append([0] * (cached - reuse) + [1] * reuse + [0] * (new - len(fresh)) + [1] * len(fresh))
            positions.append([reuse] * (new - len(fresh)) + list(range(reuse, len(row.fed))))
        cache = DynamicCache()
        if cached:
            size = next(layers for layers in kept if layers)  # a row with a kept cache gives the layer shapes
            cache = DynamicCache(ddp_cache_data=[
                (torch.cat([_pad_left(layers[i][0] if layers else _empty(size[i][0]), cached) for layers in kept]),
                 torch.cat([_pad_left(layers[i][1] if layers else _empty(size[i][1]), cached) for layers in kept]))
                for i in range(len(size))
            ])  # fmt: skip
        attention = torch.tensor(mask, device=device)
        output = self.model(
            input_ids=torch.tensor(ids, device=device),
            attention_mask=attention,
            position_ids=torch.tensor(positions, device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.stats["prefill_tokens"] += sum(len(row.fed) - r for row, r in zip(rows, reused))
        self.stats["reused_tokens"] += sum(reused)
        return [(layer.keys, layer.values) for layer in output.cache.layers], attention, output.logits[:, -1]

    def _merge(self, layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, rows: list[_Row]) -> None:
        """Add the joining rows to the running batch (in place, :class:`~.slots.SlotLayer`), their mask and the
        running batch's left-padded to one width, and drop the columns that are padding in every row."""
        if self._cache is None:
            self._cache, self._mask = slot_cache(layers), mask
        else:
            width = max(self._width(), mask.shape[1])
            for layer, (keys, values) in zip(self._cache.layers, layers):
                layer.add_rows(keys, values)
            self._mask = torch.cat(
                [F.pad(self._mask, (width - self._width(), 0)), F.pad(mask, (width - mask.shape[1], 0))]
            )
        self._rows += rows
        self._trim()

    def _trim(self) -> None:
        """Drop the leading columns that are padding in every running row (no copy: the window moves)."""
        start = int(self._mask.any(0).nonzero()[0])
        if start:
            self._mask = self._mask[:, start:]
            for layer in self._cache.layers:
                layer.trim(start)

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
        for indices in groups.values():
            params = rows[indices[0]].params  # the group's sampling parameters
            temperature, penalty = params.temperature, params.repetition_penalty
            scores = logits[indices]
            if penalty != 1.0:
                for line, index in enumerate(indices):
                    seen = torch.tensor(sorted(set(rows[index].fed + rows[index].generated)), device=scores.device)
                    picked = scores[line, seen]
                    scores[line, seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
            if temperature == 0:
                picks = scores.argmax(-1)
            else:
                warpers = sampling_warpers(params)
                picks = exponential_race(warpers(None, scores).softmax(-1), [rows[i].generator for i in indices])
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
        layers = [(layer.keys, layer.values) for layer in self._cache.layers]
        for index, row in enumerate(self._rows):
            if row.finish is not None:
                self._keep(row, _row_layers(layers, self._mask, index))
        order, moves = swap_remove([row.finish is None for row in self._rows])
        if not order:
            self._rows, self._cache, self._mask = [], None, None
            return finished
        self._rows = [self._rows[i] for i in order]
        self._mask = self._mask[torch.tensor(order, device=self._mask.device)]
        for layer in self._cache.layers:
            layer.keep_rows(moves, len(order))
        self._trim()
        return finished

    def _keep(self, row: _Row, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._kept[row.key] = (list(row.fed), layers)

    def _width(self) -> int:
        return 0 if self._mask is None else self._mask.shape[1]

    def _result(self, row: _Row) -> Generation:
        text, _ = truncate_at_stop(self.tokenizer.decode(row.generated, skip_special_tokens=True), row.params.stop)
        return Generation(text=text, finish_reason=row.finish or "length", token_ids=list(row.generated))


def _row_layers(
    layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, index: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Row ``index``'s keys and values at its real tokens only (``mask`` 1), in order: a compact copy to keep."""
    columns = mask[index].nonzero().squeeze(1)
    return [(k[index : index + 1, :, columns], v[index : index + 1, :, columns]) for k, v in layers]


def _empty(like: torch.Tensor) -> torch.Tensor:
    """A ``[1, heads, 0, dim]`` tensor shaped as ``like``'s row (a row with no kept cache)."""
    return like.new_zeros((1, like.shape[1], 0, like.shape[3]))


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``[batch, heads, length, dim]`` padded with zeros on the left of ``length`` to ``width``."""
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0)) if tensor.shape[2] < width else tensor


def supports_continuous_batching(model: PreTrainedModel) -> bool:
    """Whether :class:`ContinuousTransformersGenerator` can drive ``model``: every cache layer it builds is a
    full-attention ``DynamicLayer`` (no sliding window, no recurrent state).

    Example:
        >>> import zerosearch_trl as zs
        >>> supports_continuous_batching(zs.load_default_model()[0])  # doctest: +SKIP
        True
    """
    config = getattr(model, "config", None)
    if config is None:
        return False
    try:
        cache = DynamicCache(config=config)
    except Exception:  # an architecture whose cache this version cannot build from its config
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)
