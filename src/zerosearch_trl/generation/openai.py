"""Generation through any OpenAI-compatible server (vLLM, SGLang, ``transformers serve``, hosted APIs).

Requests run concurrently (bounded), each with a timeout and the ``openai`` client's own retries with
exponential back-off. A request that still fails becomes a ``Generation`` with ``finish_reason="error"``, so a
server that dies mid-run costs its caller a retry or a fallback, not the run; a server that cannot be reached
on the very first call raises at once, with the fix in the message. The API key is read from the environment
and never logged.

Servers differ in what they take beyond the OpenAI schema. vLLM and SGLang take sampling extras (``top_k``,
``min_p``, ``repetition_penalty``) and continue a final assistant message (``continue_final_message``), which the
simulator's prefilled prompts need; ``transformers serve`` refuses any of them (HTTP 422). On that refusal the
generator switches, once and for good, to the plain schema: sampling extras are dropped (a warning names them) and
a prefilled chat is rendered to text with the served model's chat template and sent to ``/v1/completions``, so it
is still continued, not answered anew.

:class:`OpenAITurns` makes a served policy a turn generator for the episode scheduler (evaluation): every
episode's turn is its own request in flight, handed back the moment it finishes, so the server's own continuous
batching (vLLM, SGLang) sees a steady stream instead of one batch per turn.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from zerosearch_trl.generation.base import (
    Generation,
    GenerationParams,
    Prompt,
    is_prefilled,
    params_per_prompt,
    request_params,
)

logger = logging.getLogger(__name__)


class ServerUnreachableError(ConnectionError):
    """The OpenAI-compatible server did not answer the first request."""


class OpenAIGenerator:
    """Batched generation against an OpenAI-compatible HTTP server.

    Chat messages go to ``/v1/chat/completions``, raw text prompts to ``/v1/completions``.

    Args:
        base_url: the server's API root, e.g. ``"http://localhost:8000/v1"``.
        model: the served model name; ``None`` takes the first one the server lists.
        api_key_env: environment variable holding the API key (local servers accept any value).
        max_concurrency: requests in flight at once.
        timeout: seconds per request.
        max_retries: retries per request (the ``openai`` client backs off exponentially between them).
        tokenizer: the served model's tokenizer; only :meth:`generate_ids` needs it (a policy served over HTTP,
            e.g. for evaluation).

    Example:
        >>> # in a shell: vllm serve Qwen/Qwen2.5-3B-Instruct --port 8000
        >>> gen = OpenAIGenerator("http://localhost:8000/v1", max_concurrency=32)  # doctest: +SKIP
    """

    name = "openai"
    per_prompt_seeds = True  # generate() takes a seed per prompt

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        tokenizer: Any = None,
    ) -> None:
        try:
            import openai
        except ImportError as error:
            raise ImportError(
                "OpenAIGenerator needs the openai package: pip install 'zerosearch-trl[openai]'"
            ) from error
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as 'http://localhost:8000/v1', got {base_url!r}.")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}.")
        self.base_url, self.model, self.max_concurrency = base_url.rstrip("/"), model, max_concurrency
        parts = urlsplit(self.base_url)
        # Logs and errors show the URL without any user:password part.
        self.display_url = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        self._errors = (openai.APIError, openai.APIConnectionError, openai.APITimeoutError)
        self._connection_errors = (openai.APIConnectionError, openai.APITimeoutError)
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",
            timeout=timeout,
            max_retries=max_retries,
        )
        self._answered = False
        self.tokenizer = tokenizer
        self.plain_schema = False  # set when the server refuses fields outside the OpenAI schema (HTTP 422)
        self._unprocessable = openai.UnprocessableEntityError
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        """Identifies the server and model, for cache keys."""
        return f"openai|{self.display_url}|{self.model}"

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams, seeds: Sequence[int | None] | None = None
    ) -> list[Generation]:
        """Generate one continuation per prompt; failed requests come back with ``finish_reason="error"``.

        ``seeds``: one per prompt, sent as its request's ``seed`` (``None`` keeps ``params.seed``); vLLM and SGLang
        sample a seeded request alike whatever else they batch it with.

        Raises:
            ServerUnreachableError: if no request of the first call reached the server.
        """
        if not prompts:
            return []
        if self.model is None:
            self.model = self._first_model()
        each = params_per_prompt(params, seeds, len(prompts))
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as pool:
            outcomes = list(pool.map(self._one, prompts, each))
        if not self._answered:
            if all(isinstance(o, self._connection_errors) for o in outcomes):
                raise ServerUnreachableError(self._unreachable_message(outcomes[0]))
            self._answered = True
        generations = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                # An API error is named by its type (its text may quote the request); our own errors say the fix.
                detail = type(outcome).__name__ if isinstance(outcome, self._errors) else f"{outcome}"
                logger.warning("Request to %s failed after retries: %s", self.display_url, detail)
                generations.append(Generation(text="", finish_reason="error"))
            else:
                generations.append(outcome)
        return generations

    def generate_ids(self, input_ids: Sequence[Sequence[int]], params: GenerationParams) -> list[Generation]:
        """Continue token ids: sent as their decoded text to ``/v1/completions``, the reply tokenised back.

        The round trip through text is exact for the prompt but may split the reply into other tokens than the
        server sampled, so use it where tokens are not trained on (evaluation), not for a policy's rollouts.

        Raises:
            ValueError: the generator was built without ``tokenizer``.
        """
        if self.tokenizer is None:
            raise ValueError("generate_ids needs the served model's tokenizer: OpenAIGenerator(..., tokenizer=tok).")
        texts = [self.tokenizer.decode(list(ids), skip_special_tokens=False) for ids in input_ids]
        generations = self.generate(texts, params)
        for generation in generations:
            generation.token_ids = self.tokenizer(generation.text, add_special_tokens=False)["input_ids"]
        return generations

    def _one(self, prompt: Prompt, params: GenerationParams) -> Generation | Exception:
        common = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop) or None,
            "seed": params.seed,
        }
        # Sampling options outside the OpenAI schema, understood by vLLM and SGLang.
        extra: dict = {}
        if params.top_k is not None:
            extra["top_k"] = params.top_k
        if params.min_p:
            extra["min_p"] = params.min_p
        if params.repetition_penalty != 1.0:
            extra["repetition_penalty"] = params.repetition_penalty
        if not isinstance(prompt, str) and is_prefilled(prompt):  # continue the final assistant message (our prefill)
            extra.update(continue_final_message=True, add_generation_prompt=False)
        plain = self.plain_schema
        try:
            if plain and "continue_final_message" in extra:
                prompt = self._chat_as_text(prompt)
            if plain:
                extra = {}
            if isinstance(prompt, str):
                choice = self.client.completions.create(prompt=prompt, extra_body=extra or None, **common).choices[0]
                text = choice.text or ""
            else:
                response = self.client.chat.completions.create(messages=prompt, extra_body=extra or None, **common)
                choice = response.choices[0]
                text = choice.message.content or ""
        except self._unprocessable as error:
            if plain or not extra:
                return error
            self._use_plain_schema(extra, error)
            return self._one(prompt, params)
        except Exception as error:  # one bad response (API error, malformed body) fails its row, not the batch
            return error
        # The OpenAI API drops the stop string; vLLM reports which one fired as `stop_reason`: restore it.
        stop_reason = getattr(choice, "stop_reason", None)
        if isinstance(stop_reason, str) and stop_reason in params.stop:
            text += stop_reason
        finish = "length" if choice.finish_reason == "length" else "stop"
        return Generation(text=text, finish_reason=finish)

    def _use_plain_schema(self, extra: dict[str, Any], error: Exception) -> None:
        with self._lock:
            if self.plain_schema:
                return
            self.plain_schema = True
        dropped = sorted(set(extra) - {"continue_final_message", "add_generation_prompt"})
        logger.warning(
            "%s refuses fields outside the OpenAI schema (%s): from now on %sprefilled chats go to /v1/completions "
            "as text rendered with the served model's chat template.",
            self.display_url,
            str(error)[:200],
            f"the sampling options {dropped} are dropped and " if dropped else "",
        )

    def _chat_as_text(self, messages: Any) -> str:
        """A prefilled chat as the text the server's model continues (its own chat template, final message open)."""
        with self._lock:
            if self.tokenizer is None:
                from zerosearch_trl.models import load_tokenizer

                try:
                    self.tokenizer = load_tokenizer(self.model)
                except OSError as error:
                    raise ValueError(
                        f"The server at {self.display_url} cannot continue a prefilled chat and the tokenizer of "
                        f"{self.model!r} cannot be loaded here to render it: pass OpenAIGenerator(..., tokenizer=tok)."
                    ) from error
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, continue_final_message=True)

    def _first_model(self) -> str:
        try:
            models = self.client.models.list().data
        except self._errors as error:
            raise ServerUnreachableError(self._unreachable_message(error)) from error
        if not models:
            raise ValueError(f"The server at {self.display_url} lists no models; pass model= explicitly.")
        return models[0].id

    def _unreachable_message(self, error: Exception) -> str:
        return (
            f"Cannot reach an OpenAI-compatible server at base_url={self.display_url!r} ({type(error).__name__}). "
            "Start one (e.g. `vllm serve MODEL --port 8000` or `transformers serve FOLDER --port 8000`) "
            "or fix base_url."
        )


class OpenAITurns:
    """A policy behind an OpenAI-compatible server as the episode scheduler's turn generator: each :meth:`submit`
    starts one request (``generator.max_concurrency`` in flight at most, the rest queued), and :meth:`step` hands
    back the ones that finished, waiting up to ``poll`` seconds for the first (so that searches that come back in
    the meantime are not kept waiting).

    Args:
        generator: an :class:`OpenAIGenerator` built with the served model's ``tokenizer`` (turns continue token
            ids, see :meth:`OpenAIGenerator.generate_ids`).
        poll: longest wait, in seconds, of one :meth:`step` for a request to finish.

    Example:
        >>> turns = OpenAITurns(OpenAIGenerator("http://localhost:8000/v1", tokenizer=tok))  # doctest: +SKIP
        >>> turns.submit("episode-0", tok("Question: ...")["input_ids"], GenerationParams())  # doctest: +SKIP
        >>> while not turns.idle: finished = turns.step()  # doctest: +SKIP
    """

    def __init__(self, generator: OpenAIGenerator, *, poll: float = 0.05) -> None:
        if generator.tokenizer is None:
            raise ValueError("OpenAITurns continues token ids: build OpenAIGenerator(..., tokenizer=tok).")
        self.generator, self.poll = generator, poll
        self._pool = ThreadPoolExecutor(max_workers=generator.max_concurrency, thread_name_prefix="policy")
        self._requests: dict[Future, Hashable] = {}
        self._answered = False  # whether any request has come back from the server

    @property
    def idle(self) -> bool:
        """Whether no request is queued or in flight."""
        return not self._requests

    def submit(self, key: Hashable, input_ids: Sequence[int], params: GenerationParams) -> None:
        """Start one request (or queue it behind ``max_concurrency`` others)."""
        params = request_params(params, key, input_ids)  # its own seed: two episodes of one prompt sample apart
        self._requests[self._pool.submit(self.generator.generate_ids, [list(input_ids)], params)] = key

    def step(self) -> list[tuple[Hashable, Generation]]:
        """The requests that finished, after waiting up to ``poll`` seconds for the first.

        Raises:
            ServerUnreachableError: no request has been answered yet and none is left in flight: each failed to
                reach the server.
        """
        done, _ = wait(list(self._requests), timeout=self.poll, return_when=FIRST_COMPLETED)
        finished = []
        for future in done:
            key = self._requests.pop(future)
            try:
                generation = future.result()[0]
                self._answered = True
            except ServerUnreachableError:
                # One request's connection error says little while others are in flight: it fails alone.
                if not self._answered and not self._requests:
                    raise
                generation = Generation(text="", finish_reason="error")
            finished.append((key, generation))
        return finished

    def release(self, key: Hashable) -> None:
        """Nothing is kept per episode (a server with prefix caching keeps the history itself)."""

    def reset(self) -> None:
        """Drop every request: queued ones are cancelled, the replies of those in flight are ignored (the server
        finishes them)."""
        for future in self._requests:
            future.cancel()
        self._requests.clear()

    def close(self) -> None:
        """:meth:`reset`, then let the request threads go (each ends with its request in flight, if any): an
        ``evaluate()`` call would otherwise leave ``max_concurrency`` idle threads behind."""
        self.reset()
        self._pool.shutdown(wait=False, cancel_futures=True)
