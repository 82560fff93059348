"""How the policy generates one turn inside a trainer: with what the trainer is configured for, no extra flag.

``"hf"``: ``generate`` on the trainer's model (ZeRO-3 shards gathered, FSDP's full parameters summoned, as TRL's own
generation does); ``"colocate"``: the trainer's in-process vLLM engine; ``"server"``: a ``trl vllm-serve`` server
through TRL's client, the main process generating every process's rows in one request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from zerosearch_trl.generation.base import Generation, GenerationParams
from zerosearch_trl.generation.continuous import ContinuousTransformersGenerator, supports_continuous_batching
from zerosearch_trl.generation.transformers import TransformersGenerator
from zerosearch_trl.generation.vllm import VLLMClientGenerator, VLLMEngineTurns, VLLMGenerator


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


UNSUPPORTED_GENERATION_FLAGS = {
    "generation_kwargs": "set the sampling through GRPOConfig's own fields (temperature, top_p, top_k, min_p, "
    "repetition_penalty)",
    "cache_implementation": "leave it unset",
    "vllm_structured_outputs_regex": "constrain the protocol through the prompt; a regex would fight the tags",
    "use_transformers_continuous_batching": "leave it off: the search rollout batches continuously by itself",
    "use_transformers_paged": "leave it off: the search rollout batches continuously by itself",
}
"""GRPOConfig flags of TRL's own generation that the search rollout does not honour, and what to do instead."""


def check_generation_flags(args: Any) -> None:
    """Raise a ValueError naming every GRPOConfig generation flag that is set but that the search rollout would
    ignore (:data:`UNSUPPORTED_GENERATION_FLAGS`); ``zerosearch-trl train`` runs it before any model loads.

    Example:
        >>> from types import SimpleNamespace
        >>> check_generation_flags(SimpleNamespace(generation_kwargs={"do_sample": False}))
        Traceback (most recent call last):
        ...
        ValueError: The search rollout does not honour generation_kwargs={'do_sample': False}: set the sampling through GRPOConfig's own fields (temperature, top_p, top_k, min_p, repetition_penalty).
    """
    problems = [
        f"{name}={getattr(args, name)!r}: {fix}"
        for name, fix in UNSUPPORTED_GENERATION_FLAGS.items()
        if getattr(args, name, None)
    ]
    if getattr(args, "ds3_gather_for_generation", True) is False:
        # Without the gather every forward pass is collective, and processes whose episodes end sooner stop
        # generating while the others wait for them.
        problems.append("ds3_gather_for_generation=False: set it True (the default)")
    if problems:
        raise ValueError("The search rollout does not honour " + "; ".join(problems) + ".")


def generate_with_trainer(
    trainer: Any,
    tokenizer: Any,
    inputs: list[list[int]],
    params: GenerationParams,
    backend: str,
    eos_ids: Iterable[int],
) -> list[Generation] | None:
    """One batched generation for every live row, with the trainer's own ``backend`` (:func:`policy_backend`).

    Under several processes, every process takes part in every turn, with or without live rows of its own, until
    none has one: ZeRO-3 gathers its parameter shards for generation collectively, FSDP summons full parameters
    collectively, and the server mode gathers every process's rows. Returns ``None`` when no process has a live
    row."""
    if backend == "server":
        return _generate_server(trainer, tokenizer, inputs, params, eos_ids)
    if trainer.accelerator.num_processes > 1 and not _anyone_has_rows(trainer, inputs):
        return None
    if backend == "colocate":
        return VLLMGenerator(trainer.vllm_generation.llm).generate_ids(inputs, params) if inputs else []
    return _generate_hf(trainer, tokenizer, inputs, params)


def _anyone_has_rows(trainer: Any, inputs: list[list[int]]) -> bool:
    import torch

    rows = torch.tensor([float(len(inputs))], device=trainer.accelerator.device)
    return bool(trainer.accelerator.reduce(rows, reduction="sum").item() > 0)


@contextmanager
def colocated_vllm_awake(trainer: Any) -> Iterator[None]:
    """Keep a colocated vLLM in sleep mode awake for a whole rollout: its weights synced and its KV cache back
    once, before the first turn, and put to sleep after the last, as TRL does around one generation; waking it
    per turn would reload the weights and drop the prefix cache at every turn."""
    vllm_generation = trainer.vllm_generation
    if not getattr(vllm_generation, "enable_sleep_mode", False):
        yield
        return
    if getattr(vllm_generation, "_llm_weights_sleeping", False):
        vllm_generation.sync_weights()
    vllm_generation.llm.wake_up(tags=["kv_cache"])
    try:
        yield
    finally:
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


@contextmanager
def hf_generation_model(trainer: Any) -> Iterator[Any]:
    """The trainer's model, ready to generate, as TRL's own generation path has it: ZeRO-3 shards gathered, the
    user's gradient-checkpointing settings kept, and under FSDP the full parameters summoned."""
    from trl.models import unwrap_model_for_generation

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
        yield model


def planned_sharding(args: Any) -> str | None:
    """How the run will shard its model, read before anything loads from the training arguments or from what
    ``accelerate launch`` sets: ``"FSDP"``, ``"DeepSpeed ZeRO-<stage>"``, ``"DeepSpeed"`` (stage not stated), or
    ``None`` (one process, or DDP).

    Example:
        >>> from types import SimpleNamespace
        >>> planned_sharding(SimpleNamespace(fsdp=None, deepspeed={"zero_optimization": {"stage": 3}}))
        'DeepSpeed ZeRO-3'
    """
    if getattr(args, "fsdp", None) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "FSDP"
    config = getattr(args, "deepspeed", None)
    if not config and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return None
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    config = config or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if isinstance(config, str) and Path(config).is_file():
        try:
            config = json.loads(Path(config).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"The DeepSpeed config {config} is not valid JSON ({error}): fix the file.") from None
    if isinstance(config, dict):
        stage = config.get("zero_optimization", {}).get("stage", stage)
    return f"DeepSpeed ZeRO-{stage}" if stage not in (None, "", "auto") else "DeepSpeed"


def gathers_for_generation(sharding: str | None) -> bool:
    """Whether generation under ``sharding`` (:func:`planned_sharding`) gathers parameters collectively, so that
    every process must generate each turn together: FSDP and ZeRO-3.

    Example:
        >>> gathers_for_generation("DeepSpeed ZeRO-3"), gathers_for_generation("DeepSpeed ZeRO-2")
        (True, False)
    """
    return sharding in ("FSDP", "DeepSpeed ZeRO-3")


def can_batch_continuously(trainer: Any, backend: str) -> bool:
    """Whether each episode's turns can go on their own: colocated vLLM (each process drives its own engine,
    :class:`VLLMEngineTurns`), or HF generation with every parameter on this process (one process, DDP, ZeRO-1/2)
    and a model whose cache :class:`ContinuousTransformersGenerator` can manage
    (:func:`supports_continuous_batching`). ZeRO-3 and FSDP gather parameters collectively, and the server mode
    sends every process's rows in one request, so there every process generates each turn in lockstep."""
    if backend == "colocate":
        return True
    if backend != "hf":
        return False
    if trainer.accelerator.num_processes > 1:
        from trl.distributed import DistributedBackend

        sharded = DistributedBackend(trainer.accelerator)
        if sharded.is_zero3 or sharded.is_fsdp:
            return False
    return supports_continuous_batching(trainer.accelerator.unwrap_model(trainer.model_wrapped))


def _generate_hf(trainer: Any, tokenizer: Any, inputs: list[list[int]], params: GenerationParams) -> list[Generation]:
    with hf_generation_model(trainer) as model:
        if not inputs:  # this process only takes part in the gather
            return []
        generator = TransformersGenerator(model, tokenizer, batch_size=len(inputs))
        return generator.generate_ids(inputs, params)


def turn_generator(
    trainer: Any,
    tokenizer: Any,
    backend: str,
    eos_ids: Iterable[int],
    stack: ExitStack,
    continuous: bool | None = None,
) -> Any:
    """What plays the episodes' turns for this trainer, where :func:`can_batch_continuously` allows it and
    ``continuous`` is not ``False``: :class:`VLLMEngineTurns` on the colocated engine, or a
    :class:`ContinuousTransformersGenerator` over the trainer's model (entered into ``stack`` for the rollout);
    else a batched ``generate(inputs, params)`` through the trainer's own generation (the lockstep path: ZeRO-3,
    FSDP, vLLM server mode).

    Raises:
        ValueError: ``continuous=True`` where the trainer does not allow it.
    """
    if continuous is not False and can_batch_continuously(trainer, backend):
        if backend == "colocate":
            return VLLMEngineTurns(VLLMGenerator(trainer.vllm_generation.llm))
        return ContinuousTransformersGenerator(stack.enter_context(hf_generation_model(trainer)), tokenizer)
    if continuous:
        raise ValueError(
            "make_search_rollout(continuous_batching=True) needs colocated vLLM, or HF generation with every "
            "parameter on each process (not ZeRO-3 or FSDP) and a model with full-attention caches; this trainer uses "
            f"{backend!r} generation in {trainer.accelerator.num_processes} process(es). Leave "
            "continuous_batching unset to pick what the trainer allows."
        )

    def generate(inputs: list[list[int]], params: GenerationParams) -> list[Generation] | None:
        return generate_with_trainer(trainer, tokenizer, inputs, params, backend, eos_ids)

    return generate
