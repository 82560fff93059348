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

With no arguments it trains the embedded SmolLM2-135M-Instruct on CPU in minutes (:data:`CPU_DEFAULTS`); the paper's
setting is one recipe away (``examples/recipes/``).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from zerosearch_trl.engines.factory import EngineSettings
from zerosearch_trl.ppo import SearchPPOConfig
from zerosearch_trl.reinforce import SearchReinforceConfig

logger = logging.getLogger(__name__)

REWARDS = {
    "f1": "f1_reward",
    "exact_match": "exact_match_reward",
    "em": "exact_match_reward",
    "cover_em": "cover_em_reward",
    "format": "format_reward",
}
"""Reward names the job knows; any other entry must be ``module:function`` (a user's own reward)."""

CPU_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs/zerosearch",
    "max_steps": 4,
    "per_device_train_batch_size": 4,
    "num_generations": 4,
    "max_completion_length": 512,  # two searches of three documents, thoughts and the answer
    "learning_rate": 5e-6,
    "beta": 0.001,  # the paper's KL coefficient
    "temperature": 1.0,
    "top_p": 0.95,
    "logging_steps": 1,
    "save_steps": 2,
    "save_total_limit": 2,
    "report_to": "none",
    "bf16": False,
    "seed": 0,
}
"""``GRPOConfig`` values the command uses unless a flag or the recipe sets them: small enough for two CPU cores."""

ALGORITHMS = ("grpo", "reinforce", "ppo")
"""What ``--algorithm`` takes: TRL's ``GRPOTrainer``, :class:`~zerosearch_trl.reinforce.SearchReinforceTrainer` or
:class:`~zerosearch_trl.ppo.SearchPPOTrainer`."""

CPU_ENGINE_DEFAULTS: dict[str, Any] = {"search_top_k": 3}
"""Engine values of the CPU job: three documents per search (the paper's five) keep episodes short on CPU."""


@dataclass
class SearchScriptArguments:
    """What to train on, with which algorithm, and how episodes are played."""

    algorithm: str = field(
        default="grpo",
        metadata={
            "help": "'grpo' (group-normalised advantages), 'reinforce' (the episode reward as the advantage, minus "
            "the batch mean unless --reinforce_baseline none) or 'ppo' (a critic and GAE; --critic_learning_rate...)."
        },
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "QA file/folder/hub id (FlashRAG/veRL/HF layouts); default: the generated demo task."},
    )
    dataset_split: str | None = field(default=None, metadata={"help": "Split of a hub dataset or DatasetDict."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    demo_questions: int = field(default=256, metadata={"help": "Demo task: number of training questions."})
    heldout_questions: int = field(
        default=32, metadata={"help": "Questions held back (never trained on) to measure the policy before and after."}
    )
    prompt_style: str | None = field(
        default=None,
        metadata={
            "help": "'zero_shot' (paper) or 'one_shot'; default: one_shot for the embedded model, else zero_shot."
        },
    )
    prefill: str = field(default="<think>", metadata={"help": "Text that opens the assistant turn; '' for none."})
    max_turns: int = field(default=2, metadata={"help": "Searches before the final answer turn (paper: 2)."})
    rewards: list[str] = field(
        default_factory=lambda: ["f1", "format"],
        metadata={"help": "Reward functions: f1, exact_match, cover_em, format, or module:function (your own)."},
    )
    warm_start: bool | None = field(
        default=None,
        metadata={
            "help": "Short SFT on well-formed search trajectories before RL (the cold start small models need); "
            "default: on for the embedded model, off otherwise (the paper does not use one)."
        },
    )
    warm_start_steps: int | None = field(
        default=None, metadata={"help": "Optimisation steps of the warm start (default: warm_start's, 8)."}
    )
    probe_samples: int = field(
        default=32, metadata={"help": "Held-out first turns sampled before and after training (0: skip)."}
    )
    heldout_eval: bool = field(
        default=False,
        metadata={
            "help": "Score the held-out questions (greedy, every row, noise-free simulator) at the start and the end; "
            "off by default: on two CPU cores it costs 10-25 s per question and evaluation."
        },
    )
    heldout_eval_steps: int | None = field(
        default=None, metadata={"help": "Also score them every N steps (default: start and end only)."}
    )


@dataclass
class EngineArguments(EngineSettings):
    """The search engine the policy trains against: every :class:`~zerosearch_trl.EngineSettings` field (the
    simulator by default), the simulator being by default a frozen copy of the initial policy. The curriculum sets
    the simulator's noise probability, so ``noise_prob`` must stay 0 here.

    Example:
        >>> EngineArguments(engine="hybrid", real_prob=0.3).simulator_model
        'policy'
    """

    simulator_model: str = field(
        default="policy",
        metadata={"help": "'policy' (a frozen copy of the initial policy), 'default' (embedded), a hub id or folder."},
    )


@dataclass
class SearchTrainingConfig(SearchPPOConfig, SearchReinforceConfig):
    """``GRPOConfig`` with every algorithm's options, what ``zerosearch-trl train`` parses: ``--reinforce_baseline``
    is read by ``--algorithm reinforce``, the critic's and GAE's settings by ``--algorithm ppo``; GRPO reads
    neither. ``beta`` defaults to the paper's 0.001 for all three.

    Example:
        >>> config = SearchTrainingConfig(output_dir="out", use_cpu=True, bf16=False, reinforce_baseline="none")
        >>> config.reinforce_baseline, config.critic_learning_rate, config.beta
        ('none', 1e-05, 0.001)
    """


@dataclass
class CurriculumArguments:
    """How the noise probability moves over training (the paper: exponential from 0 to 0.5, base 4)."""

    schedule: str = field(
        default="exponential", metadata={"help": "'exponential', 'linear', 'step', 'constant' or 'adaptive'."}
    )
    noise_start: float = field(default=0.0, metadata={"help": "p_s: noise probability at the start."})
    noise_end: float = field(default=0.5, metadata={"help": "p_e: noise probability at the end."})
    noise_base: float = field(default=4.0, metadata={"help": "b of the exponential schedule (paper: 4)."})
    step_milestones: list[int] = field(
        default_factory=list, metadata={"help": "Step schedule: the steps at which the noise changes."}
    )
    step_values: list[float] = field(
        default_factory=list, metadata={"help": "Step schedule: one noise probability per interval (milestones + 1)."}
    )


def schedule_from_args(args: CurriculumArguments) -> Any:
    """The :class:`~zerosearch_trl.curriculum.Schedule` that ``args`` describe (raises on a bad setting)."""
    from zerosearch_trl.curriculum import make_schedule

    if args.noise_end < args.noise_start and args.schedule != "constant":
        raise ValueError(
            f"noise_end ({args.noise_end}) is below noise_start ({args.noise_start}): the curriculum makes search "
            "harder over training; swap them, or use --schedule constant."
        )
    if args.schedule == "exponential":
        return make_schedule("exponential", p_start=args.noise_start, p_end=args.noise_end, base=args.noise_base)
    if args.schedule == "linear":
        return make_schedule("linear", p_start=args.noise_start, p_end=args.noise_end)
    if args.schedule == "constant":
        return make_schedule("constant", p=args.noise_start)
    if args.schedule == "adaptive":
        return make_schedule("adaptive", p_start=args.noise_start, p_max=args.noise_end)
    if args.schedule == "step":
        return make_schedule("step", milestones=args.step_milestones, values=args.step_values)
    return make_schedule(args.schedule)  # unknown: make_schedule names the valid ones


def resolve_rewards(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    """Reward functions from names (:data:`REWARDS`) or ``module:function`` paths; raises on an unknown one."""
    from zerosearch_trl import rewards

    functions = []
    for name in names:
        if name in REWARDS:
            functions.append(getattr(rewards, REWARDS[name]))
            continue
        module_name, _, attribute = name.partition(":")
        if not attribute:
            raise ValueError(
                f"Unknown reward {name!r}: use one of {', '.join(sorted(REWARDS))}, or 'module:function' for your own "
                "(a function with TRL's reward signature, importable from the working directory)."
            )
        if os.getcwd() not in sys.path:  # console scripts leave the working directory off the import path
            sys.path.insert(0, os.getcwd())
        try:
            functions.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError) as error:
            raise ValueError(f"Cannot import the reward {name!r}: {error}.") from error
    if not functions:
        raise ValueError("No reward function given: pass --rewards f1 format (the default) or your own.")
    return functions


def check_lora_targets(model_name: str | None, target_modules: Sequence[str] | str | None) -> None:
    """Fail, before any weights load, when a LoRA target names no module of the model (built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from zerosearch_trl.models import default_model_path, is_default_model

    if not target_modules or target_modules == "all-linear" or target_modules == ["all-linear"]:
        return
    source = default_model_path() if is_default_model(model_name) else model_name
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    leaves = {name.rsplit(".", 1)[-1] for name, _ in skeleton.named_modules()}
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    missing = [t for t in targets if t not in leaves]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(
            f"LoRA target module(s) {missing} do not exist in {source}; its linear layers are {linear} "
            "(or use --lora_target_modules all-linear)."
        )


def check_config(
    script_args: SearchScriptArguments,
    engine_args: EngineArguments,
    curriculum_args: CurriculumArguments,
    training_args: Any,
    model_args: Any,
) -> None:
    """Every check that needs no model weights; :func:`train` runs it first."""
    from zerosearch_trl.engines.factory import check_engine_settings

    check_engine_settings(engine_args)
    if script_args.algorithm not in ALGORITHMS:
        raise ValueError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {script_args.algorithm!r}.")
    if script_args.algorithm == "ppo":
        from zerosearch_trl.ppo import check_ppo_config

        if not hasattr(training_args, "critic_learning_rate"):
            raise ValueError("--algorithm ppo needs a SearchPPOConfig (or SearchTrainingConfig) as training_args.")
        check_ppo_config(training_args, model_args.model_name_or_path or "default")
    if engine_args.noise_prob:
        raise ValueError(
            f"--noise_prob {engine_args.noise_prob}: during training the curriculum sets the noise probability; "
            "for a fixed one use --schedule constant --noise_start P --noise_end P."
        )
    schedule_from_args(curriculum_args)
    resolve_rewards(script_args.rewards)
    if script_args.max_turns < 0:
        raise ValueError(f"max_turns must be >= 0, got {script_args.max_turns}.")
    if script_args.prompt_style not in (None, "zero_shot", "one_shot"):
        raise ValueError(f"prompt_style must be 'zero_shot' or 'one_shot', got {script_args.prompt_style!r}.")
    if script_args.heldout_questions < 0 or script_args.probe_samples < 0:
        raise ValueError("heldout_questions and probe_samples must be >= 0.")
    if script_args.heldout_eval_steps is not None and script_args.heldout_eval_steps < 1:
        raise ValueError(
            f"heldout_eval_steps must be >= 1 (or unset: start and end only), got {script_args.heldout_eval_steps}."
        )
    if getattr(model_args, "use_peft", False):
        check_lora_targets(model_args.model_name_or_path, model_args.lora_target_modules)
    if getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False):
        import torch

        if model_args.dtype == "auto":
            raise ValueError(
                f"QLoRA computes in --dtype, which is {model_args.dtype!r}: name one, e.g. --dtype bfloat16."
            )
        if not torch.cuda.is_available():
            raise ValueError("QLoRA (load_in_4bit/load_in_8bit) needs a CUDA GPU; on CPU use LoRA (--use_peft).")


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
    if script_args.limit is not None:
        train_rows = train_rows.select(range(min(script_args.limit, len(train_rows))))
    return train_rows, heldout, task


def _engines(engine_args: EngineArguments, model_args: Any) -> tuple[Any, Any]:
    """``(engine, heldout_engine)``: the engine the policy trains against, and the yardstick of the held-out
    evaluation: the same settings without noise or cache, sharing the simulator's weights (and a hybrid's real
    engine); a real engine serves both as it is."""
    from zerosearch_trl.engines.factory import make_engine, make_simulator

    settings = engine_args
    if settings.simulator_model == "policy":  # a frozen copy of the initial policy, loaded on its own
        settings = replace(settings, simulator_model=model_args.model_name_or_path or "default")
    if settings.engine not in ("simulated", "hybrid"):
        engine = make_engine(settings)
        return engine, engine
    simulator = make_simulator(settings)
    engine = make_engine(settings, simulator=simulator)
    heldout = make_engine(replace(settings, cache_path=None), simulator=simulator, real=getattr(engine, "real", None))
    return engine, heldout


def model_load_kwargs(model_args: Any) -> dict[str, Any]:
    """The ``from_pretrained`` arguments that a ``trl.ModelConfig`` holds besides the model and its dtype: the
    revision, the attention kernel, and QLoRA's quantization (placed on this process's GPU at load time).

    Example:
        >>> from trl import ModelConfig
        >>> model_load_kwargs(ModelConfig(attn_implementation="eager", model_revision="v2"))
        {'revision': 'v2', 'attn_implementation': 'eager'}
    """
    from trl import get_quantization_config

    from zerosearch_trl.models import inference_device

    kwargs: dict[str, Any] = {}
    if model_args.model_revision not in (None, "main"):
        kwargs["revision"] = model_args.model_revision
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = inference_device()
    return kwargs


def _probe(model: Any, tokenizer: Any, questions: Sequence[str], script_args: SearchScriptArguments, style: str):
    from zerosearch_trl.warmstart import well_formed_search_share

    if not script_args.probe_samples or not questions:
        return None
    was_training = model.training
    result = well_formed_search_share(
        model,
        tokenizer,
        questions,
        n=script_args.probe_samples,
        prompt_style=style,
        prefill=script_args.prefill or None,
    )
    model.train(was_training)
    return result["shares"]


def _first_and_last(history: Sequence[dict[str, Any]], key: str) -> tuple[Any, Any]:
    values = [row[key] for row in history if isinstance(row.get(key), (int, float))]
    return (values[0], values[-1]) if values else (None, None)


def train(
    script_args: SearchScriptArguments | None = None,
    engine_args: EngineArguments | None = None,
    curriculum_args: CurriculumArguments | None = None,
    training_args: Any = None,
    model_args: Any = None,
) -> dict[str, Any]:
    """Run the main job; return the run's summary (also written to ``output_dir/summary.json``).

    Args:
        script_args: data, prompt, rewards, warm start (:class:`SearchScriptArguments`).
        engine_args: the engine, the simulator by default (:class:`EngineArguments`).
        curriculum_args: the noise schedule (:class:`CurriculumArguments`).
        training_args: a ``trl.GRPOConfig``, or a :class:`SearchTrainingConfig` for the REINFORCE baseline and
            PPO's settings (``--algorithm ppo`` needs one); default: :data:`CPU_DEFAULTS`.
        model_args: a ``trl.ModelConfig`` (model, dtype, LoRA/QLoRA); default: the embedded model, no LoRA.

    Example:
        >>> from trl import GRPOConfig
        >>> summary = train(training_args=GRPOConfig(**{**CPU_DEFAULTS, "max_steps": 2}))  # doctest: +SKIP
        >>> summary["report"]  # doctest: +SKIP
        'runs/zerosearch/report.md'
    """
    import torch
    from trl import GRPOTrainer, ModelConfig, get_peft_config

    from zerosearch_trl.curriculum import CurriculumCallback
    from zerosearch_trl.evaluation import SearchEvalCallback
    from zerosearch_trl.guards import TrainingGuardCallback
    from zerosearch_trl.models import disable_cudnn_attention, is_default_model, load_model
    from zerosearch_trl.report import MetricsJsonlCallback, summary_lines, write_report
    from zerosearch_trl.rollout import make_search_rollout
    from zerosearch_trl.warmstart import make_warmstart_dataset, warm_start

    script_args = script_args or SearchScriptArguments()
    engine_args = engine_args or EngineArguments(**CPU_ENGINE_DEFAULTS)
    curriculum_args = curriculum_args or CurriculumArguments()
    training_args = training_args or SearchTrainingConfig(**CPU_DEFAULTS, use_cpu=not torch.cuda.is_available())
    model_args = model_args or ModelConfig()
    check_config(script_args, engine_args, curriculum_args, training_args, model_args)
    started = time.monotonic()
    if torch.cuda.is_available():
        disable_cudnn_attention()  # NaN gradients from left-padded rows in bf16 (see its docstring)

    default_model = is_default_model(model_args.model_name_or_path)
    style = script_args.prompt_style or ("one_shot" if default_model else "zero_shot")
    train_rows, heldout, task = load_training_data(script_args, style)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resuming = bool(training_args.resume_from_checkpoint)

    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    load_kwargs = model_load_kwargs(model_args)
    model, tokenizer = load_model(model_args.model_name_or_path, dtype=dtype or "auto", **load_kwargs)
    questions = list(heldout["question"])
    probe_start = _probe(model, tokenizer, questions, script_args, style)
    warm = script_args.warm_start if script_args.warm_start is not None else default_model
    if warm and not resuming:
        warm_dir = output_dir / "warm_start"
        data = make_warmstart_dataset(task, prompt_style=style, exclude_questions=questions, seed=training_args.seed)
        model = warm_start(
            model,
            tokenizer,
            data,
            output_dir=str(warm_dir),
            **({"max_steps": script_args.warm_start_steps} if script_args.warm_start_steps else {}),
            prefill=script_args.prefill or None,
            seed=training_args.seed,
        )
        # Saved and reloaded so that TRL's reference model (built from the model's path when beta > 0) is the
        # warm-started policy, the start of RL, and not the original checkpoint.
        model.save_pretrained(warm_dir / "model")
        tokenizer.save_pretrained(warm_dir / "model")
        load_kwargs.pop("revision", None)  # a local folder now
        model, tokenizer = load_model(warm_dir / "model", dtype=dtype or "auto", **load_kwargs)
    probe_after_warm_start = _probe(model, tokenizer, questions, script_args, style) if warm and not resuming else None

    engine, heldout_engine = _engines(engine_args, model_args)
    guard = TrainingGuardCallback()
    from zerosearch_trl.ppo import SearchPPOTrainer
    from zerosearch_trl.reinforce import SearchReinforceTrainer

    trainer_class = {"grpo": GRPOTrainer, "reinforce": SearchReinforceTrainer, "ppo": SearchPPOTrainer}
    trainer = trainer_class[script_args.algorithm](
        model=model,
        processing_class=tokenizer,
        args=training_args,
        train_dataset=train_rows,
        reward_funcs=resolve_rewards(script_args.rewards),
        rollout_func=make_search_rollout(engine, max_turns=script_args.max_turns, prefill=script_args.prefill or None),
        peft_config=get_peft_config(model_args),
        callbacks=[guard],
    )
    # Callbacks that add keys to the logs go first, so that report_to and metrics.jsonl see those keys.
    if hasattr(engine, "noise_prob"):
        CurriculumCallback(engine, schedule_from_args(curriculum_args)).attach(trainer)
    else:
        logger.warning("The %s engine serves no simulated documents: the noise curriculum is off.", engine.name)
    heldout_eval = None
    if script_args.heldout_eval and len(heldout):
        # Its own noise-free engine: the curriculum's noise must not move the yardstick.
        heldout_eval = SearchEvalCallback(
            heldout,
            heldout_engine,
            eval_steps=script_args.heldout_eval_steps,
            max_turns=script_args.max_turns,
            prefill=script_args.prefill or None,
            prompt_style=style,
            max_completion_length=training_args.max_completion_length,
        ).attach(trainer)
    trainer.add_callback(MetricsJsonlCallback(output_dir / "metrics.jsonl"))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(str(output_dir))
    probe_end = _probe(trainer.model, tokenizer, questions, script_args, style)

    history = trainer.state.log_history
    summary: dict[str, Any] = {
        "output_dir": str(output_dir),
        "steps": trainer.state.global_step,
        "seconds": round(time.monotonic() - started, 1),
        "warm_start": bool(warm and not resuming),
        "first_turn_shares": {"start": probe_start, "after_warm_start": probe_after_warm_start, "end": probe_end},
        "episodes_with_search": _first_and_last(history, "search/episodes_with_search"),
        "well_formed_episodes": _first_and_last(history, "search/well_formed_episodes"),
        "reward": _first_and_last(history, "reward"),
        "heldout": {str(step): scores for step, scores in heldout_eval.history} if heldout_eval else None,
        "engine": {"name": engine.name, "stats": engine.stats.as_dict() if hasattr(engine, "stats") else None},
        "guard_events": [str(event) for event in guard.events],
    }
    if torch.cuda.is_available():  # this process's peak: policy, reference model and an in-process simulator
        summary["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    searching = " / ".join(
        "-" if shares is None else f"{shares['search']:.2f}"
        for shares in (probe_start, probe_after_warm_start, probe_end)
    )
    algorithm = script_args.algorithm
    if algorithm == "reinforce":
        algorithm += f" (baseline: {getattr(training_args, 'reinforce_baseline', 'batch_mean')})"
    extra = {
        "model": model_args.model_name_or_path or "embedded SmolLM2-135M-Instruct",
        "algorithm": algorithm,
        "dataset": script_args.dataset or f"demo task ({len(train_rows)} train / {len(heldout)} held-out questions)",
        "warm start": summary["warm_start"],
        "held-out first turns that search (start / after warm start / end)": searching,
        "episodes that search (first step / last step)": _pair(summary["episodes_with_search"]),
        "well-formed episodes (first step / last step)": _pair(summary["well_formed_episodes"]),
        **_heldout_lines(heldout_eval),
        "config": json.dumps(
            {"script": asdict(script_args), "engine": asdict(engine_args), "curriculum": asdict(curriculum_args)}
        ),
    }
    if trainer.accelerator.is_main_process:
        summary["report"] = str(write_report(output_dir, extra=extra, events=guard.events))
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        for line in summary_lines(output_dir / "metrics.jsonl"):
            print(line)
        print(f"Held-out first turns that search (start / after warm start / end): {searching}")
        for label, value in _heldout_lines(heldout_eval).items():
            print(f"{label}: {value}")
        print(f"Model, metrics.jsonl and report.md are in {output_dir}")
    return summary


def _heldout_lines(callback: Any) -> dict[str, str]:
    """Report lines of the held-out evaluation: each metric from the first to the last evaluation."""
    if callback is None or not callback.history:
        return {}
    (first_step, first), (last_step, last) = callback.history[0], callback.history[-1]
    title = f"held-out, greedy, {first['n']} questions (step {first_step} / step {last_step})"
    return {
        f"{title}: {label}": _pair((first[key], last[key]))
        for key, label in (("f1", "F1"), ("exact_match", "exact match"), ("mean_searches", "searches per question"))
    }


def _pair(values: tuple[Any, Any]) -> str:
    return " / ".join("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}" for v in values)


def make_parser() -> Any:
    """TRL's parser over the job's five dataclasses, with :data:`CPU_DEFAULTS` as defaults (flags and a
    ``--config`` YAML recipe override them)."""
    import torch
    from trl import ModelConfig

    from zerosearch_trl.cli import command_parser

    types = (SearchScriptArguments, EngineArguments, CurriculumArguments, SearchTrainingConfig, ModelConfig)
    parser = command_parser("train", types)
    parser.set_defaults(**CPU_DEFAULTS, **CPU_ENGINE_DEFAULTS, use_cpu=not torch.cuda.is_available())
    return parser


def run_cli(argv: Sequence[str]) -> int:
    """``zerosearch-trl train [--config recipe.yaml] [flags]``."""
    script_args, engine_args, curriculum_args, training_args, model_args = make_parser().parse_args_and_config(
        list(argv)
    )
    train(script_args, engine_args, curriculum_args, training_args, model_args)
    return 0
