"""What every text-generation backend offers: ``generate(prompts, params) -> list[Generation]``, batched."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

Messages = list[dict[str, str]]
Prompt = str | Messages
"""A raw text prompt (sent as is) or chat messages (the backend applies the chat template). Messages that end
with an assistant message are a prefill: the backend continues that message, and returns only the new text."""


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters shared by all backends.

    Attributes:
        max_new_tokens: generation budget per prompt.
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass.
        top_k: keep only the k most likely tokens; ``None`` for no limit.
        min_p: drop tokens less likely than ``min_p`` times the most likely one; ``None`` for no limit.
        repetition_penalty: 1.0 for none.
        stop: strings that end a generation (kept in the returned text).
        seed: makes sampling repeatable where the backend allows it. A turn generator (continuous batching)
            gives each request its own seed, :func:`derive_seed` of this one, the request's key and its input's
            length, so that a request samples the same tokens whatever runs beside it.

    Example:
        >>> GenerationParams(max_new_tokens=64, temperature=0.8, stop=("</search>",)).temperature
        0.8
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (no limit), got {self.top_k}.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}.")


@dataclass
class Generation:
    """One generated continuation.

    Attributes:
        text: the generated text (special tokens removed; a stop string that fired is kept).
        finish_reason: ``"stop"`` (EOS or a stop string), ``"length"`` (budget spent) or ``"error"``.
        token_ids: generated token ids, when the backend exposes them; they end with the EOS token when the
            model emitted one.
        logprobs: the sampling log-probability of each generated token, when the backend gives them.

    Example:
        >>> Generation("<search> Lyon </search>", token_ids=[5, 6, 7])
        Generation(text='<search> Lyon </search>', finish_reason='stop', token_ids=[5, 6, 7], logprobs=None)
    """

    text: str
    finish_reason: str = "stop"
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None


@runtime_checkable
class TextGenerator(Protocol):
    """A batched text generator. Implementations: transformers (in-process), OpenAI-compatible HTTP, vLLM.

    A backend that can sample each prompt from a seed of its own says so with ``per_prompt_seeds = True`` and
    takes ``generate(prompts, params, seeds=...)``, one seed (or ``None``) per prompt; the simulator then seeds each
    keyed search's documents apart from the rest of its batch (every backend here does: OpenAI-compatible servers,
    vLLM, and both transformers generators). A backend without it is called without ``seeds``.

    Example:
        >>> class Prefix:  # no base class needed: the protocol is structural
        ...     name = "prefix"
        ...     def generate(self, prompts, params):
        ...         return [Generation(str(p)[: params.max_new_tokens], "length") for p in prompts]
        >>> isinstance(Prefix(), TextGenerator), Prefix().generate(["Lyon is"], GenerationParams(max_new_tokens=4))
        (True, [Generation(text='Lyon', finish_reason='length', token_ids=None, logprobs=None)])
    """

    name: str

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        """Generate one continuation per prompt, in order."""
        ...


def is_prefilled(prompt: Prompt) -> bool:
    """Whether ``prompt`` is chat messages ending with an assistant prefix to continue."""
    return not isinstance(prompt, str) and bool(prompt) and prompt[-1].get("role") == "assistant"


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` just after the earliest stop string; return ``(text, whether one was found)``."""
    cuts = [text.find(s) + len(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def derive_seed(*parts: object) -> int:
    """A non-negative 63-bit seed that is a pure function of ``parts`` (their ``repr``), stable across processes
    and Python runs (unlike ``hash``).

    Example:
        >>> derive_seed(0, "episode", 3) == derive_seed(0, "episode", 3) != derive_seed(0, "episode", 4)
        True
    """
    digest = hashlib.blake2b("|".join(map(repr, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def params_per_prompt(params: GenerationParams, seeds: Sequence[int | None] | None, n: int) -> list[GenerationParams]:
    """``params`` for each of ``n`` prompts, with its own seed where ``seeds`` gives one (the optional ``seeds``
    argument of the backends that sample per prompt: ``per_prompt_seeds = True``).

    Example:
        >>> [p.seed for p in params_per_prompt(GenerationParams(seed=1), [None, 7], 2)]
        [1, 7]
    """
    if seeds is None:
        return [params] * n
    if len(seeds) != n:
        raise ValueError(f"Got {len(seeds)} seeds for {n} prompts: give one per prompt (None keeps params.seed).")
    return [params if seed is None else replace(params, seed=seed) for seed in seeds]


def request_params(params: GenerationParams, key: object, input_ids: Sequence[int]) -> GenerationParams:
    """A turn generator's request: ``params`` with the request's own seed, :func:`derive_seed` of ``params.seed``,
    its key and its input's length (an episode's next turn is longer than its last), so that no two requests of one
    call sample alike (a GRPO group's episodes share their prompt) and none depends on what runs beside it.

    Example:
        >>> one, two = (request_params(GenerationParams(seed=1), key, [5, 6]) for key in ("episode 0", "episode 1"))
        >>> one.seed != two.seed, request_params(GenerationParams(), "episode 0", [5, 6]).seed
        (True, None)
    """
    if params.seed is None:
        return params
    return replace(params, seed=derive_seed(params.seed, key, len(input_ids)))
