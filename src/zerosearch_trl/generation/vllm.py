"""Generation with vLLM: in process with ``vllm.LLM`` (GPU only; vLLM is an optional extra, imported on use), or
through TRL's ``VLLMClient`` to a ``trl vllm-serve`` server (the client needs no vLLM locally).

:class:`VLLMEngineTurns` drives an in-process engine request by request (``add_request`` / ``step``, the loop that
``LLM.generate`` runs inside): an episode's next turn joins the running batch as soon as its documents are back,
and vLLM's prefix caching finds the turn's history, already computed, in its cache.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Hashable, Sequence
from typing import Any

from zerosearch_trl.generation.base import (
    Generation,
    GenerationParams,
    Prompt,
    is_prefilled,
    params_per_prompt,
    request_params,
)


def import_vllm() -> Any:
    """Import vLLM or raise an ImportError that says how to get it."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "VLLMGenerator needs vLLM and a CUDA GPU: pip install 'zerosearch-trl[vllm]'. "
            "On CPU use TransformersGenerator, or OpenAIGenerator against a vLLM server elsewhere."
        ) from error
    return vllm


class VLLMGenerator:
    """Batched generation with an in-process ``vllm.LLM``.

    Args:
        model: a model id or folder (a new ``vllm.LLM`` is built with ``llm_kwargs``), or an existing
            ``vllm.LLM`` (e.g. TRL's colocated engine, ``trainer.vllm_generation.llm``).
        **llm_kwargs: passed to ``vllm.LLM`` (``gpu_memory_utilization``, ``tensor_parallel_size``...).

    Example:
        >>> gen = VLLMGenerator("Qwen/Qwen2.5-3B-Instruct", gpu_memory_utilization=0.3)  # doctest: +SKIP
    """

    name = "vllm"
    per_prompt_seeds = True  # generate() takes a seed per prompt

    def __init__(self, model: Any, **llm_kwargs: Any) -> None:
        self._vllm = import_vllm()
        self.llm = self._vllm.LLM(model=model, **llm_kwargs) if isinstance(model, str) else model
        self.fingerprint = f"vllm|{model if isinstance(model, str) else type(model).__name__}"

    def _sampling(self, params: GenerationParams, **extra: Any) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or -1,
            min_p=params.min_p or 0.0,
            repetition_penalty=params.repetition_penalty,
            stop=list(params.stop) or None,
            seed=params.seed,
            include_stop_str_in_output=True,
            **extra,
        )

    def generate_ids(self, input_ids: Sequence[Sequence[int]], params: GenerationParams) -> list[Generation]:
        """Generate from token ids, with the sampling log-probability of every generated token.

        ``token_ids`` end with the EOS token when the model emitted one, as vLLM reports them.
        """
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(ids)} for ids in input_ids], self._sampling(params, logprobs=0), use_tqdm=False
        )
        return [_to_generation(output) for output in outputs]

    def generate(
        self, prompts: Sequence[Prompt], params: GenerationParams, seeds: Sequence[int | None] | None = None
    ) -> list[Generation]:
        """Generate one continuation per prompt; chat messages use the model's chat template. ``seeds``: one per
        prompt (``None`` keeps ``params.seed``); vLLM samples a seeded request alike whatever it is batched with."""
        sampling = [self._sampling(p) for p in params_per_prompt(params, seeds, len(prompts))]
        results: list[Generation | None] = [None] * len(prompts)
        texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        if texts:
            outputs = self.llm.generate([prompts[i] for i in texts], [sampling[i] for i in texts], use_tqdm=False)
            for i, output in zip(texts, outputs):
                results[i] = _to_generation(output)
        for prefilled in (False, True):  # vLLM takes the continue flag per call, so group the chats by it
            chats = [i for i, p in enumerate(prompts) if not isinstance(p, str) and is_prefilled(p) == prefilled]
            if chats:
                outputs = self.llm.chat(
                    [prompts[i] for i in chats],
                    [sampling[i] for i in chats],
                    use_tqdm=False,
                    add_generation_prompt=not prefilled,
                    continue_final_message=prefilled,
                )
                for i, output in zip(chats, outputs):
                    results[i] = _to_generation(output)
        return results  # type: ignore[return-value]


class VLLMEngineTurns:
    """An in-process vLLM engine as the rollout's turn generator (continuous batching): each :meth:`submit` is one
    engine request, and each :meth:`step` is one engine step (every running request decodes a token; new ones are
    scheduled in), returning the requests that finished.

    Nothing is kept here between an episode's turns: vLLM's automatic prefix caching (on by default in its V1
    engine) reuses the KV blocks of the history that the next turn's input starts with, while they stay cached.

    Args:
        generator: the :class:`VLLMGenerator` around the engine (its ``llm.llm_engine``; e.g. TRL's colocated one).

    Example:
        >>> turns = VLLMEngineTurns(VLLMGenerator(trainer.vllm_generation.llm))  # doctest: +SKIP
        >>> turns.submit("episode-0", [1, 2, 3], GenerationParams(max_new_tokens=8))  # doctest: +SKIP
        >>> while not turns.idle: finished = turns.step()  # doctest: +SKIP
    """

    def __init__(self, generator: VLLMGenerator) -> None:
        self.generator = generator
        self.engine = generator.llm.llm_engine
        self._keys: dict[str, Hashable] = {}  # engine request id -> the caller's key
        self._prefix = f"zerosearch-{uuid.uuid4().hex[:8]}"  # unique among every user of the engine
        self._ids = itertools.count()

    @property
    def idle(self) -> bool:
        """Whether no request is in the engine."""
        return not self._keys

    def submit(self, key: Hashable, input_ids: Sequence[int], params: GenerationParams) -> None:
        """Add one request to the running engine, with the sampled tokens' logprobs."""
        request_id = f"{self._prefix}-{next(self._ids)}"
        params = request_params(params, key, input_ids)  # its own seed: a GRPO group's rows must not sample alike
        self.engine.add_request(
            request_id, {"prompt_token_ids": list(input_ids)}, self.generator._sampling(params, logprobs=0)
        )
        self._keys[request_id] = key

    def step(self) -> list[tuple[Hashable, Generation]]:
        """One engine step; the requests that finished in it."""
        return [
            (self._keys.pop(output.request_id), _to_generation(output))
            for output in self.engine.step()
            if output.finished and output.request_id in self._keys
        ]

    def release(self, key: Hashable) -> None:
        """Nothing is kept per episode here (the prefix cache is vLLM's)."""

    def reset(self) -> None:
        """Abort every request still in the engine, so that none outlives the rollout that made it."""
        if self._keys:
            self.engine.abort_request(list(self._keys))
            self._keys.clear()


class VLLMClientGenerator:
    """Generation from token ids on a ``trl vllm-serve`` server, through TRL's ``VLLMClient``.

    It is the rollout's policy backend in TRL's vLLM server mode (``trainer.vllm_generation.vllm_client``): the
    server returns token ids and logprobs but no text, so the text (used only to parse the action) is decoded
    here, and the finish reason is inferred from EOS, the stop strings and the budget.

    Args:
        client: a ``trl.generation.vllm_client.VLLMClient`` (or anything with its ``generate`` signature).
        tokenizer: the policy's tokenizer.
        eos_ids: the ids that end a generation (default: the tokenizer's EOS).

    Example:
        >>> gen = VLLMClientGenerator(trainer.vllm_generation.vllm_client, tokenizer)  # doctest: +SKIP
        >>> gen.generate_ids([[1, 2, 3]], GenerationParams(max_new_tokens=8, stop=("</search>",)))  # doctest: +SKIP
    """

    name = "vllm-server"

    def __init__(self, client: Any, tokenizer: Any, eos_ids: Sequence[int] | None = None) -> None:
        self.client, self.tokenizer = client, tokenizer
        self.eos_ids = set(eos_ids) if eos_ids is not None else {tokenizer.eos_token_id}

    def generate_ids(self, input_ids: Sequence[Sequence[int]], params: GenerationParams) -> list[Generation]:
        """Generate from token ids, with the sampling log-probability of every generated token."""
        extra: dict[str, Any] = {"stop": list(params.stop), "include_stop_str_in_output": True}
        if params.seed is not None:
            extra["seed"] = params.seed
        output = self.client.generate(
            prompts=[list(ids) for ids in input_ids],
            n=1,
            repetition_penalty=params.repetition_penalty,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or 0,
            min_p=params.min_p or 0.0,
            max_tokens=params.max_new_tokens,
            logprobs=0,
            generation_kwargs=extra,
        )
        logprobs = output.get("logprobs") or [None] * len(output["completion_ids"])
        results = []
        for ids, token_logprobs in zip(output["completion_ids"], logprobs):
            ids = list(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            stopped = bool(ids) and ids[-1] in self.eos_ids or any(s in text for s in params.stop)
            results.append(
                Generation(
                    text=text,
                    finish_reason="stop" if stopped or len(ids) < params.max_new_tokens else "length",
                    token_ids=ids,
                    # logprobs=0 asks for the sampled token's only, so each position holds one value
                    logprobs=[lp[0] for lp in token_logprobs] if token_logprobs is not None else None,
                )
            )
        return results


def _to_generation(output: Any) -> Generation:
    completion = output.outputs[0]
    finish = "length" if completion.finish_reason == "length" else "stop"
    ids = list(completion.token_ids)
    logprobs = None
    if completion.logprobs is not None:  # one {token_id: Logprob} per position; read the sampled token's
        logprobs = [position[token].logprob for position, token in zip(completion.logprobs, ids)]
    return Generation(text=completion.text, finish_reason=finish, token_ids=ids, logprobs=logprobs)
