"""The simulated search engine: an LLM writes the documents, useful or deliberately noisy.

For every request the engine draws the mode independently: noisy with probability ``noise_prob`` (the
curriculum raises it during training), useful otherwise. Useful prompts carry the episode's question and gold
answer; noisy ones ask for on-topic documents that do not help. The generated text is parsed into documents
and each one is labelled. Malformed outputs and leaks (a noisy document that contains a gold answer) are
retried a bounded number of times with exponential back-off; what is still wrong after that is repaired
(a leak is redacted, missing documents are filled with an explicit placeholder) and logged. The engine never
raises on a bad generation and never loops forever.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from zerosearch_trl.engines.base import Document, RequestDraws, SearchRequest, contains_answer, validate_top_k
from zerosearch_trl.engines.cache import SearchCache
from zerosearch_trl.engines.simulator_text import first_result, parse_documents
from zerosearch_trl.generation.base import GenerationParams, TextGenerator
from zerosearch_trl.prompts import (
    SIMULATOR_FORMATS,
    SimulatorFormat,
    SimulatorMode,
    simulator_messages,
    simulator_prefill,
)

logger = logging.getLogger(__name__)

LeakGuard = Literal["regenerate", "redact", "off"]
PLACEHOLDER_TEXT = "No further results."
REDACTED = "[...]"


def default_per_document(backend: str, model: str | None, prompt_format: str = "prompt_only") -> bool:
    """Whether a simulator should write one document per generation when the user has not said.

    On for the embedded 135M model in process (it loses track of a five-document list); off otherwise, as in the
    paper (all documents in one generation), and always off for the released simulators' format.

    Example:
        >>> default_per_document("transformers", "default"), default_per_document("openai", "default")
        (True, False)
    """
    from zerosearch_trl.models import DEFAULT_MODEL_ALIASES

    embedded = model is None or model in DEFAULT_MODEL_ALIASES
    return backend == "transformers" and embedded and prompt_format != "zerosearch"


@dataclass
class SimulatorStats:
    """Running counters of a simulated engine, for logging.

    Example:
        >>> stats = SimulatorStats(requests=4, noisy_requests=1)
        >>> stats.noisy_fraction
        0.25
    """

    requests: int = 0
    noisy_requests: int = 0
    generations: int = 0
    retries: int = 0
    fallbacks: int = 0
    leaks_detected: int = 0
    leaks_redacted: int = 0
    useful_with_answer: int = 0
    useful_results: int = 0

    @property
    def noisy_fraction(self) -> float:
        """Share of requests that were served noisy documents."""
        return self.noisy_requests / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float]:
        """Counters plus ``noisy_fraction`` and ``useful_answer_rate`` (useful results holding a gold answer)."""
        out: dict[str, float] = asdict(self)
        out["noisy_fraction"] = self.noisy_fraction
        out["useful_answer_rate"] = self.useful_with_answer / self.useful_results if self.useful_results else 0.0
        return out


class SimulatedSearchEngine:
    """Search results written by an LLM, useful or noisy by a per-request draw.

    Args:
        generator: a text generation backend (:class:`~zerosearch_trl.generation.TransformersGenerator`,
            :class:`~zerosearch_trl.generation.OpenAIGenerator`, :class:`~zerosearch_trl.generation.VLLMGenerator`).
        top_k: documents per query (paper: 5).
        noise_prob: probability that a request gets noisy documents; the curriculum sets it during training.
        words_per_doc: target document length asked of the simulator (paper: about 30 words).
        temperature: simulator sampling temperature (paper: 0.8).
        top_p: simulator nucleus sampling mass.
        max_new_tokens: simulator generation budget (paper: about 600 tokens).
        max_retries: extra attempts for a malformed or leaking generation (then a logged fallback).
        retry_backoff: seconds before the first retry, doubled at each further attempt.
        leak_guard: what to do with a noisy document that contains a gold answer: ``"regenerate"`` (retry the
            request, redact if it still leaks), ``"redact"`` (mask the answer at once) or ``"off"``.
        prompt_format: ``"prompt_only"`` for an off-the-shelf instruct model, ``"finetuned"`` for a simulator
            trained with :mod:`zerosearch_trl.simulator.sft`, ``"zerosearch"`` for the released ZeroSearch
            simulators (their exact input, no prefill, all documents in one answer cut at ``Doc {top_k + 1}``).
        per_document: ask for one document per generation (``top_k`` generations per request) instead of all
            ``top_k`` in one; small prompt-only simulators, such as the embedded 135M model, manage the
            one-document format far more often. Each generation is then capped at ``3 * words_per_doc``
            tokens and cut at the first blank line after its body (:func:`first_result`).
        prefill: start the simulator's answer with the expected format (``Doc 1 (Title:``); the backend must
            support continuing an assistant message (transformers, vLLM and SGLang do).
        cache: a :class:`~zerosearch_trl.engines.cache.SearchCache`; off by default, since sampling diversity is
            part of the simulation.
        seed: seeds the noise draws; :meth:`reseed` restarts them per optimisation step and process.

    Example:
        >>> import zerosearch_trl as zs
        >>> model, tokenizer = zs.load_default_model()  # doctest: +SKIP
        >>> # per_document: the embedded 135M model writes one good document at a time, not five in a row
        >>> engine = zs.SimulatedSearchEngine(zs.TransformersGenerator(model, tokenizer), noise_prob=0.25, per_document=True)  # doctest: +SKIP
        >>> docs = engine.search([zs.SearchRequest("Lyon country", "Where is Lyon?", ("France",))])  # doctest: +SKIP
    """

    name = "simulated"
    draws_per_request = True  # the useful/noisy draw: a cache keyed by the request alone would freeze it

    def __init__(
        self,
        generator: TextGenerator,
        *,
        top_k: int = 5,
        noise_prob: float = 0.0,
        words_per_doc: int = 30,
        temperature: float = 0.8,
        top_p: float = 1.0,
        max_new_tokens: int = 600,
        max_retries: int = 2,
        retry_backoff: float = 0.1,
        leak_guard: LeakGuard = "regenerate",
        prompt_format: SimulatorFormat = "prompt_only",
        per_document: bool = False,
        prefill: bool = True,
        cache: SearchCache | None = None,
        seed: int | None = None,
    ) -> None:
        self.check_settings(
            top_k=top_k,
            noise_prob=noise_prob,
            words_per_doc=words_per_doc,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            leak_guard=leak_guard,
            prompt_format=prompt_format,
            per_document=per_document,
        )
        if prompt_format == "zerosearch":
            prefill = False  # the released checkpoints were fine-tuned without one
        self.generator = generator
        self.top_k = top_k
        self.noise_prob = noise_prob
        self.words_per_doc = words_per_doc
        if per_document:
            # A title and ~30 words fit in ~3 tokens a word (parsing keeps at most 2 * words_per_doc words
            # anyway); in a batch every row runs as long as the longest, so a tight cap is most of the speed. No
            # stop at a blank line: the embedded model often writes one between the title and the body, and a
            # stop there lost those documents (first-pass placeholders 0.45 -> 0.37 without it, 64 demo requests);
            # what runs on past the body is cut when parsed.
            max_new_tokens = min(max_new_tokens, 3 * words_per_doc)
        self.params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        self.max_retries, self.retry_backoff = max_retries, retry_backoff
        self.leak_guard, self.prompt_format = leak_guard, prompt_format
        self.per_document, self.prefill = per_document, prefill
        self.cache = cache
        self.stats = SimulatorStats()
        self.seed = seed
        self._lock = threading.Lock()
        self._draws = RequestDraws(seed, "noise")

    @staticmethod
    def check_settings(
        *,
        top_k: int = 5,
        noise_prob: float = 0.0,
        words_per_doc: int = 30,
        max_retries: int = 2,
        retry_backoff: float = 0.1,
        leak_guard: str = "regenerate",
        prompt_format: str = "prompt_only",
        per_document: bool | None = False,
    ) -> None:
        """Raise a ValueError naming the first bad setting; lets a CLI fail before it loads a model."""
        validate_top_k(top_k)
        if not 0.0 <= float(noise_prob) <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {noise_prob!r}.")
        if leak_guard not in ("regenerate", "redact", "off"):
            raise ValueError(f"leak_guard must be 'regenerate', 'redact' or 'off', got {leak_guard!r}.")
        if prompt_format not in SIMULATOR_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(SIMULATOR_FORMATS)}, got {prompt_format!r}.")
        if prompt_format == "zerosearch" and per_document:
            raise ValueError(
                "prompt_format 'zerosearch' writes all documents in one answer, as the released simulators were "
                "fine-tuned to: set per_document False."
            )
        if max_retries < 0 or retry_backoff < 0:
            raise ValueError(f"max_retries and retry_backoff must be >= 0, got {max_retries} and {retry_backoff}.")
        if words_per_doc < 1:
            raise ValueError(f"words_per_doc must be >= 1, got {words_per_doc}.")

    @property
    def noise_prob(self) -> float:
        """Probability that a request is served noisy documents (set by the curriculum at run time)."""
        return self._noise_prob

    @noise_prob.setter
    def noise_prob(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {value!r}.")
        self._noise_prob = float(value)

    @property
    def fingerprint(self) -> str:
        """Identifies what this engine would generate, for cache keys."""
        generator = getattr(self.generator, "fingerprint", type(self.generator).__name__)
        return (
            f"simulated|{generator}|{self.prompt_format}|k={self.top_k}|w={self.words_per_doc}|"
            f"per_doc={self.per_document}|prefill={self.prefill}|{self.params}"
        )

    def reseed(self, *, step: int, rank: int = 0, call: int | str = 0) -> None:
        """Restart the useful/noisy draws from ``(seed, rank, step)``, and the step's ``call``-th rollout: processes
        draw apart, and a run resumed at step ``i`` draws what an uninterrupted one would (the search rollout calls
        it at every rollout). A request's ``draw_key`` makes its draw independent of its batch (see
        :class:`~zerosearch_trl.engines.base.RequestDraws`). A ``None`` seed keeps the draws unseeded.

        Example:
            >>> engine = SimulatedSearchEngine(generator=None, noise_prob=0.5, seed=0)
            >>> requests = [SearchRequest(f"q{i}") for i in range(8)]
            >>> engine.reseed(step=3, rank=1); first = engine.draw_modes(requests)
            >>> engine.reseed(step=3, rank=1); first == engine.draw_modes(requests)
            True
        """
        self._draws.reseed(step=step, rank=rank, call=call)

    def draw_modes(self, requests: Sequence[SearchRequest]) -> list[SimulatorMode]:
        """Draw useful/noisy per request, independently, with the current ``noise_prob``."""
        noise_prob = self._noise_prob
        return ["noisy" if u < noise_prob else "useful" for u in self._draws.uniforms(requests)]

    def search(
        self, requests: Sequence[SearchRequest], modes: Sequence[SimulatorMode] | None = None
    ) -> list[list[Document]]:
        """Return ``top_k`` labelled documents per request.

        Args:
            requests: the queries, with question and gold answers where known.
            modes: force ``"useful"``/``"noisy"`` per request; by default drawn with ``noise_prob``.
        """
        if not requests:
            return []
        modes = list(modes) if modes is not None else self.draw_modes(requests)
        if len(modes) != len(requests):
            raise ValueError(f"Got {len(modes)} modes for {len(requests)} requests.")
        keys = [self._cache_key(r, m) for r, m in zip(requests, modes)]
        cached = [self.cache.get(k) if self.cache is not None else None for k in keys]
        # Documents are collected per request across attempts until it has top_k acceptable ones.
        kept: dict[int, list[Document]] = {i: [] for i, c in enumerate(cached) if c is None}
        leaked: dict[int, list[Document]] = {i: [] for i in kept}
        for attempt in range(self.max_retries + 1):
            pending = [i for i in kept if len(kept[i]) < self.top_k]
            if not pending:
                break
            if attempt:
                self._count(retries=len(pending))
                time.sleep(self.retry_backoff * 2 ** (attempt - 1))
            # One generation per request, or one per missing document in per-document mode.
            jobs = [(i, slot) for i in pending for slot in range(self.top_k - len(kept[i]) if self.per_document else 1)]
            # A keyed request's generations get seeds of their own, so that its documents do not depend on which
            # requests share the batch (where the backend takes a seed per prompt).
            seeds = [self._draws.seed_for(requests[i], "documents", attempt, slot) for i, slot in jobs]
            texts = self._generate([self._prompt(requests[i], modes[i]) for i, _ in jobs], seeds)
            for (i, _), text in zip(jobs, texts):
                self._collect(i, text, requests[i], modes[i], kept, leaked)
        results = []
        for i, request in enumerate(requests):
            documents = cached[i] if cached[i] is not None else kept[i][: self.top_k]
            if len(documents) < self.top_k:
                documents = self._fallback(documents, leaked[i], request, modes[i])
            elif cached[i] is None and self.cache is not None:
                self.cache.put(keys[i], documents)
            self._record(documents, modes[i])
            results.append(documents)
        return results

    def _collect(
        self,
        i: int,
        text: str,
        request: SearchRequest,
        mode: SimulatorMode,
        kept: dict[int, list[Document]],
        leaked: dict[int, list[Document]],
    ) -> None:
        """Parse one generation and keep its acceptable, new documents for request ``i``."""
        n_docs = 1 if self.per_document else self.top_k
        if self.prompt_format == "zerosearch":  # as the reference does with the released simulators' answers
            text = text.replace("\n\n", "\n").split(f"Doc {self.top_k + 1}")[0]
        if self.prefill:
            text = simulator_prefill(n_docs) + text
        documents = parse_documents(first_result(text) if self.per_document else text, 2 * self.words_per_doc)
        seen = {(d.title, d.text) for d in kept[i]}
        for document in documents[:n_docs]:
            if (document.title, document.text) in seen:
                continue
            seen.add((document.title, document.text))
            self._label(document, request, mode)
            if mode == "noisy" and self.leak_guard != "off" and document.meta["contains_answer"]:
                self._count(leaks_detected=1)
                if self.leak_guard == "regenerate":
                    leaked[i].append(document)
                    continue
                self._redact(document, request)
            kept[i].append(document)

    def _generate(self, prompts: list[list[dict[str, str]]], seeds: list[int | None]) -> list[str]:
        """Generated texts; a backend that raises costs this attempt (empty texts), never the caller's run."""
        self._count(generations=len(prompts))
        try:
            if getattr(self.generator, "per_prompt_seeds", False) and any(seed is not None for seed in seeds):
                return [g.text for g in self.generator.generate(prompts, self.params, seeds=seeds)]
            return [g.text for g in self.generator.generate(prompts, self.params)]
        except Exception:  # any backend failure (OOM, server gone) is retried, then falls back
            logger.exception("Simulator backend %s failed on %d prompts", type(self.generator).__name__, len(prompts))
            return [""] * len(prompts)

    def _prompt(self, request: SearchRequest, mode: SimulatorMode) -> list[dict[str, str]]:
        return simulator_messages(
            request.query,
            mode,
            question=request.question,
            golden_answers=request.golden_answers,
            n_docs=1 if self.per_document else self.top_k,
            words_per_doc=self.words_per_doc,
            prompt_format=self.prompt_format,
            prefill=self.prefill,
        )

    def _label(self, document: Document, request: SearchRequest, mode: SimulatorMode) -> None:
        contains = contains_answer(document, request.golden_answers)
        document.meta.update(engine=self.name, label=mode, contains_answer=contains)

    def _redact(self, document: Document, request: SearchRequest) -> None:
        for answer in sorted(request.golden_answers, key=len, reverse=True):
            if answer.strip():
                pattern = re.compile(rf"\b{re.escape(answer)}\b", re.IGNORECASE)
                document.title = pattern.sub(REDACTED, document.title)
                document.text = pattern.sub(REDACTED, document.text)
        if contains_answer(document, request.golden_answers):
            # The answer appears in a form the literal pattern misses ("Beatles" for "The Beatles", "DC" for
            # "D.C."): a noisy result must not carry it, so the document gives way to a placeholder.
            document.title, document.text = "", PLACEHOLDER_TEXT
            document.meta["placeholder"] = True
        document.meta.update(redacted=True, contains_answer=contains_answer(document, request.golden_answers))
        self._count(leaks_redacted=1)

    def _fallback(
        self, documents: list[Document], leaked: list[Document], request: SearchRequest, mode: SimulatorMode
    ) -> list[Document]:
        """Complete a short result after its retries: redacted leaks first, then explicit placeholders."""
        documents = list(documents)
        unique = list({(d.title, d.text): d for d in leaked}.values())
        for document in unique[: self.top_k - len(documents)]:
            self._redact(document, request)
            documents.append(document)
        while len(documents) < self.top_k:
            placeholder = Document(title="", text=PLACEHOLDER_TEXT, meta={"placeholder": True})
            self._label(placeholder, request, mode)
            documents.append(placeholder)
        reason = f"simulator output malformed or leaking after {self.max_retries + 1} attempts"
        for document in documents:
            document.meta.update(fallback=True, shortfall=reason)
        self._count(fallbacks=1)
        logger.warning("Simulated search fell back for query %r (%s mode): %s", request.query, mode, reason)
        return documents

    def _record(self, documents: list[Document], mode: SimulatorMode) -> None:
        judged = mode == "useful" and any(d.meta.get("contains_answer") is not None for d in documents)
        self._count(
            requests=1,
            noisy_requests=int(mode == "noisy"),
            useful_results=int(judged),
            useful_with_answer=int(judged and any(d.meta.get("contains_answer") for d in documents)),
        )

    def _count(self, **deltas: int) -> None:
        """Add to the counters; a lock keeps them exact when several threads search at once."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _cache_key(self, request: SearchRequest, mode: SimulatorMode) -> str:
        return SearchCache.make_key(self.fingerprint, request, mode)
