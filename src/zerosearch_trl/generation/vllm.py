"""In-process generation with ``vllm.LLM`` (GPU only; vLLM is an optional extra, imported on use)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zerosearch_trl.generation.base import Generation, GenerationParams, Prompt, is_prefilled


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

    def __init__(self, model: Any, **llm_kwargs: Any) -> None:
        self._vllm = import_vllm()
        self.llm = self._vllm.LLM(model=model, **llm_kwargs) if isinstance(model, str) else model
        self.fingerprint = f"vllm|{model if isinstance(model, str) else type(model).__name__}"

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[Generation]:
        """Generate one continuation per prompt; chat messages use the model's chat template."""
        sampling = self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or -1,
            repetition_penalty=params.repetition_penalty,
            stop=list(params.stop) or None,
            seed=params.seed,
            include_stop_str_in_output=True,
        )
        results: list[Generation | None] = [None] * len(prompts)
        texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        if texts:
            outputs = self.llm.generate([prompts[i] for i in texts], sampling, use_tqdm=False)
            for i, output in zip(texts, outputs):
                results[i] = _to_generation(output)
        for prefilled in (False, True):  # vLLM takes the continue flag per call, so group the chats by it
            chats = [i for i, p in enumerate(prompts) if not isinstance(p, str) and is_prefilled(p) == prefilled]
            if chats:
                outputs = self.llm.chat(
                    [prompts[i] for i in chats],
                    sampling,
                    use_tqdm=False,
                    add_generation_prompt=not prefilled,
                    continue_final_message=prefilled,
                )
                for i, output in zip(chats, outputs):
                    results[i] = _to_generation(output)
        return results  # type: ignore[return-value]


def _to_generation(output: Any) -> Generation:
    completion = output.outputs[0]
    finish = "length" if completion.finish_reason == "length" else "stop"
    return Generation(text=completion.text, finish_reason=finish, token_ids=list(completion.token_ids))
