"""How the policy generates one turn inside a trainer: with what the trainer is configured for, no extra flag.

``"hf"``: ``generate`` on the trainer's model (ZeRO-3 shards gathered, FSDP's full parameters summoned, as TRL's own
generation does); ``"colocate"``: the trainer's in-process vLLM engine; ``"server"``: a ``trl vllm-serve`` server
through TRL's client, the main process generating every process's rows in one request.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from zerosearch_trl.generation.base import Generation, GenerationParams
from zerosearch_trl.generation.transformers import TransformersGenerator
from zerosearch_trl.generation.vllm import VLLMClientGenerator, VLLMGenerator


def policy_backend(trainer: Any) -> str:
    """``"hf"``, ``"colocate"`` or ``"server"``, from the trainer's own configuration."""
    args = trainer.args
    if not getattr(args, "use_vllm", False):
        return "hf"
    mode = getattr(args, "vllm_mode", "colocate")
    if mode not in ("colocate", "server"):
        raise ValueError(f"Unknown vllm_mode {mode!r}; TRL offers 'colocate' and 'server'.")
    if mode == "colocate" and getattr(args, "vllm_tensor_parallel_size", 1) > 1:
        raise NotImplementedError(
            f"The search rollout does not yet drive colocated vLLM with tensor parallelism "
            f"(vllm_tensor_parallel_size={args.vllm_tensor_parallel_size}): use vllm_mode='server', "
            "or vllm_tensor_parallel_size=1."
        )
    return mode


def generate_with_trainer(
    trainer: Any,
    tokenizer: Any,
    inputs: list[list[int]],
    params: GenerationParams,
    backend: str,
    eos_ids: Iterable[int],
) -> list[Generation] | None:
    """One batched generation for every live row, with the trainer's own ``backend`` (:func:`policy_backend`);
    ``None`` when no process has a live row (server mode, where every process takes part in each turn)."""
    if backend == "server":
        return _generate_server(trainer, tokenizer, inputs, params, eos_ids)
    if backend == "colocate":
        return _generate_colocate(trainer, inputs, params)
    return _generate_hf(trainer, tokenizer, inputs, params)


def _generate_colocate(trainer: Any, inputs: list[list[int]], params: GenerationParams) -> list[Generation]:
    vllm_generation = trainer.vllm_generation
    sleeps = getattr(vllm_generation, "enable_sleep_mode", False)
    if sleeps:  # as TRL does around its own generate: weights back if level-2 sleep discarded them, then KV cache
        if getattr(vllm_generation, "_llm_weights_sleeping", False):
            vllm_generation.sync_weights()
        vllm_generation.llm.wake_up(tags=["kv_cache"])
    try:
        return VLLMGenerator(vllm_generation.llm).generate_ids(inputs, params)
    finally:
        if sleeps:
            vllm_generation.llm.sleep(level=2)
            vllm_generation._llm_weights_sleeping = True


def _generate_server(
    trainer: Any, tokenizer: Any, inputs: list[list[int]], params: GenerationParams, eos_ids: Iterable[int]
) -> list[Generation] | None:
    """The main process generates every process's rows in one request, then hands each its own slice."""
    from accelerate.utils import broadcast_object_list, gather_object

    accelerator = trainer.accelerator
    per_process = gather_object([(inputs, params.max_new_tokens)])
    if not any(rows for rows, _ in per_process):
        return None
    if accelerator.is_main_process:
        everything = [ids for rows, _ in per_process for ids in rows]
        budget = max(b for rows, b in per_process if rows)
        generator = VLLMClientGenerator(trainer.vllm_generation.vllm_client, tokenizer, eos_ids=sorted(eos_ids))
        payload = [generator.generate_ids(everything, replace(params, max_new_tokens=budget))]
    else:
        payload = [None]
    broadcast_object_list(payload, from_process=0)
    start = sum(len(rows) for rows, _ in per_process[: accelerator.process_index])
    return payload[0][start : start + len(inputs)]


def _generate_hf(trainer: Any, tokenizer: Any, inputs: list[list[int]], params: GenerationParams) -> list[Generation]:
    from trl.models import unwrap_model_for_generation

    # As TRL's own generation path does: gather ZeRO-3 shards, keep the user's gradient-checkpointing
    # settings, and under FSDP generate with full parameters.
    dist = getattr(trainer, "_dist", None)
    full_params = dist.summon_full_params(trainer.model_wrapped, recurse=False) if dist else nullcontext()
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model,
        full_params,
    ):
        generator = TransformersGenerator(model, tokenizer, batch_size=len(inputs))
        return generator.generate_ids(inputs, params)
