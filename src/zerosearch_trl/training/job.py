"""The main job: GRPO with the multi-turn search rollout against a simulated engine, a noise curriculum and a report.

Any engine of :func:`~zerosearch_trl.make_engine` can stand in for the simulator (``--engine bm25|dense|hybrid|
remote|web``): a hybrid mixes real and simulated documents, and a real engine alone trains as Search-R1 does (no
simulated documents, so the noise curriculum is off).

``zerosearch-trl train`` (or :func:`train` from Python) wires the library's parts into TRL's ``GRPOTrainer``:

1. every setting is checked first (schedule, rewards, engine, LoRA targets, dataset gold answers), so that a bad
   configuration fails before any model loads;
2. the QA data (a file, a hub dataset, or by default the package's generated demo task, with questions held back
   for the before/after measurement), the policy (optionally with LoRA/QLoRA from TRL's ``ModelConfig``) and the
   simulator (by default a frozen copy of the initial policy);
3. an optional warm start (a short SFT on well-formed search trajectories, the cold start a small model needs);
4. GRPO with :func:`~zerosearch_trl.make_search_rollout`, the :class:`~zerosearch_trl.CurriculumCallback`, the
   training guards and ``metrics.jsonl``;
5. the final model or adapter, ``report.md`` with plots, and a one-screen summary.

With no arguments it trains the embedded SmolLM2-135M-Instruct on CPU in minutes (:data:`~zerosearch_trl.training.config.CPU_DEFAULTS`); the paper's
setting is one recipe away (``examples/recipes/``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerosearch_trl.models import resolve_prompt_settings
from zerosearch_trl.prompts import PromptSettings
from zerosearch_trl.training.config import (
    CurriculumArguments,
    EngineArguments,
    JobArguments,
    SearchScriptArguments,
    check_config,
    model_load_kwargs,
    resolve_rewards,
    schedule_from_args,
)
from zerosearch_trl.training.engines import build_engines, heldout_engines, simulator_resolved

logger = logging.getLogger(__name__)


@dataclass
class Policy:
    """The policy as the job loads it: the model, its tokenizer, and how to load it again."""

    model: Any
    tokenizer: Any
    dtype: Any
    load_kwargs: dict[str, Any]
    prompt: PromptSettings
    is_default: bool


def train(
    script_args: SearchScriptArguments | None = None,
    engine_args: EngineArguments | None = None,
    curriculum_args: CurriculumArguments | None = None,
    training_args: Any = None,
    model_args: Any = None,
) -> dict[str, Any]:
    """Run the main job; return the run's summary (also written to ``output_dir/summary.json``).

    Args:
        script_args: data, prompt, rewards, warm start (:class:`~zerosearch_trl.training.config.SearchScriptArguments`).
        engine_args: the engine, the simulator by default (:class:`~zerosearch_trl.training.config.EngineArguments`).
        curriculum_args: the noise schedule (:class:`~zerosearch_trl.training.config.CurriculumArguments`).
        training_args: a ``trl.GRPOConfig``, or a :class:`~zerosearch_trl.training.config.SearchTrainingConfig` for
            the REINFORCE baseline and PPO's settings (``--algorithm ppo`` needs one); default: ``CPU_DEFAULTS``.
        model_args: a ``trl.ModelConfig`` (model, dtype, LoRA/QLoRA); default: the embedded model, no LoRA.

    Example:
        >>> from trl import GRPOConfig
        >>> summary = train(training_args=GRPOConfig(**{**CPU_DEFAULTS, "max_steps": 2}))  # doctest: +SKIP
        >>> summary["report"]  # doctest: +SKIP
        'runs/zerosearch/report.md'
    """
    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    from zerosearch_trl.models import disable_cudnn_attention
    from zerosearch_trl.training.checkpoints import (
        CompletedRunGuard,
        PromptSettingsCallback,
        RunAlreadyComplete,
        resolve_resume,
    )
    from zerosearch_trl.training.guards import TrainingGuardCallback
    from zerosearch_trl.training.summary import finish_run

    args = JobArguments.with_defaults(script_args, engine_args, curriculum_args, training_args, model_args)
    check_config(args.script, args.engine, args.curriculum, args.training, args.model)
    # "latest"/"true": the newest complete checkpoint, found (or refused) before any model loads.
    args.training.resume_from_checkpoint = resolve_resume(
        args.training.resume_from_checkpoint, args.training.output_dir
    )
    started = time.monotonic()
    if torch.cuda.is_available():
        disable_cudnn_attention()  # NaN gradients from left-padded rows in bf16 (see its docstring)

    prompt = resolve_prompt_settings(args.model.model_name_or_path, args.script.prompt_style, args.script.prefill)
    train_rows, heldout, task = load_training_data(args.script, prompt.prompt_style)
    output_dir = Path(args.training.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    policy = load_policy(args.model, prompt)
    questions = list(heldout["question"])
    # Under ZeRO-3 the freshly loaded policy holds only this process's parameter shards: it is probed once the
    # trainer exists, through the trainer's model with its parameters gathered.
    zero3 = is_deepspeed_zero3_enabled()
    n_probe = args.script.probe_samples
    probes = {"start": None if zero3 else probe(policy, questions, n_probe)}
    warm = run_warm_start(policy, task, questions, args)
    probes["after_warm_start"] = probe(policy, questions, n_probe) if warm and not zero3 else None
    settings = simulator_resolved(args.engine, args.model)
    engine, heldout_engine = build_engines(settings, task)
    guard = TrainingGuardCallback(tool_skip_drop=args.script.tool_skip_drop)
    trainer = build_trainer(policy, train_rows, engine, guard, args)
    if zero3:
        probes["after_warm_start" if warm else "start"] = probe(policy, questions, n_probe, trainer)
    add_curriculum(trainer, engine, args.curriculum)
    heldout_eval = None
    if args.script.heldout_eval and len(heldout):
        engines = heldout_engines(engine, heldout_engine, task, settings, args.script.heldout_engines)
        heldout_eval = add_heldout_eval(trainer, heldout, engines, policy, args)
    add_metrics_file(trainer, output_dir)
    # How the policy was prompted travels with it (every checkpoint, the final folder), so eval plays it alike.
    trainer.add_callback(PromptSettingsCallback(prompt))
    trainer.add_callback(CompletedRunGuard())
    try:
        trainer.train(resume_from_checkpoint=args.training.resume_from_checkpoint)
    except RunAlreadyComplete as done:  # killed after its last checkpoint: only the outputs were missing
        logger.info("Resumed at %s; writing the run's outputs.", done)
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        prompt.save(output_dir)
    probes["end"] = probe(policy, questions, n_probe, trainer)
    return finish_run(
        trainer,
        engine,
        guard,
        heldout_eval,
        probes,
        args,
        warm=warm,
        started=started,
        n_rows=(len(train_rows), len(heldout)),
    )


def load_policy(model_args: Any, prompt: PromptSettings) -> Policy:
    """The policy to train, loaded with ``model_args`` (dtype, revision, attention kernel, QLoRA quantization)."""
    import torch

    from zerosearch_trl.models import is_default_model, load_model

    is_default = is_default_model(model_args.model_name_or_path)
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    load_kwargs = model_load_kwargs(model_args)
    model, tokenizer = load_model(model_args.model_name_or_path, dtype=dtype or "auto", **load_kwargs)
    return Policy(place(model, load_kwargs), tokenizer, dtype or "auto", load_kwargs, prompt, is_default)


def place(model: Any, load_kwargs: dict[str, Any]) -> Any:
    """``model`` on the device the trainer will train it on (this process's GPU, or the CPU), so that the probes
    and the warm start before the trainer exists do not run a GPU run's model on the CPU; left where it is when a
    ``device_map`` placed it (QLoRA) or ZeRO-3 holds its parameters in shards."""
    from accelerate import PartialState
    from transformers.integrations import is_deepspeed_zero3_enabled

    if "device_map" in load_kwargs or is_deepspeed_zero3_enabled():
        return model
    return model.to(PartialState().device)


def load_training_data(script_args: SearchScriptArguments, prompt_style: str) -> tuple[Any, Any, Any]:
    """``(train_dataset, heldout_dataset, demo_task_or_None)``; the held-out rows are never trained on."""
    from zerosearch_trl.data import QADataError, load_qa_dataset
    from zerosearch_trl.demo import make_demo_task

    task = None
    if script_args.dataset is None:
        task = make_demo_task(
            script_args.demo_questions + script_args.heldout_questions, seed=0, prompt_style=prompt_style
        )
        dataset = task.dataset
    else:
        dataset = load_qa_dataset(script_args.dataset, script_args.dataset_split, prompt_style=prompt_style)
    empty = sum(not golds for golds in dataset["golden_answers"])
    if empty:
        raise QADataError(
            f"{empty} of {len(dataset)} rows of {script_args.dataset or 'the demo task'} have no gold answers: "
            "the rewards need them; drop those rows or fill 'golden_answers'."
        )
    n_heldout = min(script_args.heldout_questions, len(dataset) // 2)
    heldout = dataset.select(range(len(dataset) - n_heldout, len(dataset)))
    train_rows = dataset.select(range(len(dataset) - n_heldout))
    held = set(heldout["question"])
    repeats = [i for i, question in enumerate(train_rows["question"]) if question in held]
    if repeats:  # the data repeats a held-out question: training on it would measure memory, not search
        logger.warning(
            "Dropped %d training rows that repeat a held-out question (first: %r).",
            len(repeats),
            train_rows[repeats[0]]["question"],
        )
        train_rows = train_rows.select(sorted(set(range(len(train_rows))) - set(repeats)))
    if script_args.limit is not None:
        train_rows = train_rows.select(range(min(script_args.limit, len(train_rows))))
    return train_rows, heldout, task


def probe(policy: Policy, questions: Sequence[str], n_samples: int, trainer: Any = None) -> dict[str, float] | None:
    """The shares of held-out first turns that search, answer or do neither (``None`` when probing is off): of
    the policy as loaded, or of ``trainer``'s model, as TRL generates with it (ZeRO-3 shards gathered)."""
    from trl.models import unwrap_model_for_generation

    from zerosearch_trl.training.probe import well_formed_search_share

    if not n_samples or not questions:
        return None
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=trainer.args.ds3_gather_for_generation
        )
        if trainer is not None
        else nullcontext(policy.model)
    ) as model:
        was_training = model.training
        result = well_formed_search_share(
            model,
            policy.tokenizer,
            questions,
            n=n_samples,
            prompt_style=policy.prompt.prompt_style,
            prefill=policy.prompt.prefill,
        )
        model.train(was_training)
    return result["shares"]


def run_warm_start(policy: Policy, task: Any, heldout_questions: Sequence[str], args: JobArguments) -> bool:
    """The warm start, when it is on and the run is not resuming; ``policy`` then holds the warm-started model.

    Returns:
        Whether it ran.
    """
    from zerosearch_trl.models import load_model
    from zerosearch_trl.training.warmstart import make_warmstart_dataset, warm_start

    script_args, training_args = args.script, args.training
    warm = script_args.warm_start if script_args.warm_start is not None else policy.is_default
    if not warm or training_args.resume_from_checkpoint:
        return False
    warm_dir = Path(training_args.output_dir) / "warm_start"
    data = make_warmstart_dataset(
        task, prompt_style=policy.prompt.prompt_style, exclude_questions=heldout_questions, seed=training_args.seed
    )
    model = warm_start(
        policy.model,
        policy.tokenizer,
        data,
        output_dir=str(warm_dir),
        **({"max_steps": script_args.warm_start_steps} if script_args.warm_start_steps else {}),
        prefill=policy.prompt.prefill,
        seed=training_args.seed,
    )
    # Saved and reloaded so that TRL's reference model (built from the model's path when beta > 0) is the
    # warm-started policy, the start of RL, and not the original checkpoint.
    model.save_pretrained(warm_dir / "model")
    policy.tokenizer.save_pretrained(warm_dir / "model")
    policy.load_kwargs.pop("revision", None)  # a local folder now
    policy.model, policy.tokenizer = load_model(warm_dir / "model", dtype=policy.dtype, **policy.load_kwargs)
    policy.model = place(policy.model, policy.load_kwargs)
    return True


def build_trainer(
    policy: Policy,
    train_rows: Any,
    engine: Any,
    guard: Any,
    args: JobArguments,
) -> Any:
    """The ``--algorithm``'s trainer (TRL's ``GRPOTrainer`` or one of its subclasses) with the search rollout, the
    rewards, LoRA when asked, and the training ``guard``."""
    from trl import GRPOTrainer, get_peft_config

    from zerosearch_trl.rollout import make_search_rollout
    from zerosearch_trl.training.ppo import SearchPPOTrainer
    from zerosearch_trl.training.reinforce import SearchReinforceTrainer

    trainer_class = {"grpo": GRPOTrainer, "reinforce": SearchReinforceTrainer, "ppo": SearchPPOTrainer}
    return trainer_class[args.script.algorithm](
        model=policy.model,
        processing_class=policy.tokenizer,
        args=args.training,
        train_dataset=train_rows,
        reward_funcs=resolve_rewards(args.script.rewards),
        rollout_func=make_search_rollout(
            engine,
            max_turns=args.script.max_turns,
            max_turn_tokens=args.script.max_turn_tokens,
            max_observation_tokens=args.script.max_observation_tokens,
            prefill=policy.prompt.prefill,
            mask_observations=args.script.mask_observations,
            continuous_batching=args.script.continuous_batching,
        ),
        peft_config=get_peft_config(args.model),
        callbacks=[guard],
    )


# The callbacks that add keys to the logs go first (attach), so that report_to and metrics.jsonl see those keys.


def add_curriculum(trainer: Any, engine: Any, curriculum_args: CurriculumArguments) -> None:
    """The noise curriculum, for an engine that serves simulated documents (a real engine alone has no noise)."""
    from zerosearch_trl.training.curriculum import CurriculumCallback

    if hasattr(engine, "noise_prob"):
        CurriculumCallback(engine, schedule_from_args(curriculum_args)).attach(trainer)
    else:
        logger.warning("The %s engine serves no simulated documents: the noise curriculum is off.", engine.name)


def add_heldout_eval(
    trainer: Any,
    heldout: Any,
    engines: dict[str, Any],
    policy: Policy,
    args: JobArguments,
) -> Any:
    """The held-out evaluation callback, scoring against ``engines`` (:func:`~zerosearch_trl.training.engines.heldout_engines`): noise-free, since
    the curriculum's noise must not move the yardstick."""
    from zerosearch_trl.training.heldout import SearchEvalCallback

    return SearchEvalCallback(
        heldout,
        engines,
        eval_steps=args.script.heldout_eval_steps,
        max_turns=args.script.max_turns,
        prefill=policy.prompt.prefill,
        prompt_style=policy.prompt.prompt_style,
        max_turn_tokens=args.script.max_turn_tokens,
        max_observation_tokens=args.script.max_observation_tokens,
        max_completion_length=args.training.max_completion_length,
    ).attach(trainer)


def add_metrics_file(trainer: Any, output_dir: Path) -> None:
    """``metrics.jsonl``: after every callback that adds keys to the logs."""
    from zerosearch_trl.training.logs import MetricsJsonlCallback

    trainer.add_callback(MetricsJsonlCallback(output_dir / "metrics.jsonl"))
