"""The training job's configuration: its argument dataclasses, the CPU defaults, and every check that needs no model.

``zerosearch-trl train`` parses five dataclasses (:class:`SearchScriptArguments`, :class:`EngineArguments`,
:class:`CurriculumArguments`, :class:`SearchTrainingConfig` and TRL's ``ModelConfig``) from flags or a YAML
recipe; :func:`check_config` then fails on a bad setting before any model loads.

Example:
    >>> schedule_from_args(CurriculumArguments(schedule="linear", noise_end=0.4))(5, total_steps=10)
    0.2
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zerosearch_trl.engines.factory import EngineSettings
from zerosearch_trl.prompts import PromptArguments
from zerosearch_trl.rollout.episode import DEFAULT_OBSERVATION_TOKENS, DEFAULT_TURN_TOKENS, check_episode_budget
from zerosearch_trl.rollout.policy import check_generation_flags, gathers_for_generation, planned_sharding
from zerosearch_trl.training.ppo_config import SearchPPOConfig
from zerosearch_trl.training.reinforce import SearchReinforceConfig

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
    "max_completion_length": 1024,  # 2 x (128 + 256) + 128 + 1 = 897: two searches and the answer always fit
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

HELDOUT_ENGINES = ("bm25", "dense", "simulated", "remote", "web")
"""What ``--heldout_engines`` names; a real one searches ``--corpus`` (the demo task's world by default)."""

ALGORITHMS = ("grpo", "reinforce", "ppo")
"""What ``--algorithm`` takes: TRL's ``GRPOTrainer``, :class:`~zerosearch_trl.training.reinforce.SearchReinforceTrainer` or
:class:`~zerosearch_trl.training.ppo.SearchPPOTrainer`."""

CPU_SCRIPT_DEFAULTS: dict[str, Any] = {"max_turn_tokens": 128, "max_observation_tokens": 256}
"""Episode budgets of the CPU job: the embedded model's turns are short, and three documents fit in 256 tokens."""

CPU_ENGINE_DEFAULTS: dict[str, Any] = {"search_top_k": 3}
"""Engine values of the CPU job: three documents per search (the paper's five) keep episodes short on CPU."""


@dataclass
class SearchScriptArguments(PromptArguments):
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
    max_turns: int = field(default=2, metadata={"help": "Searches before the final answer turn (paper: 2)."})
    max_turn_tokens: int = field(
        default=DEFAULT_TURN_TOKENS,
        metadata={"help": "Model tokens per turn (paper: 500); a turn that runs out is an invalid action."},
    )
    max_observation_tokens: int = field(
        default=DEFAULT_OBSERVATION_TOKENS,
        metadata={
            "help": "Tokens per search result, tags included (paper: 500); a longer one loses its end. "
            "max_completion_length must hold max_turns x (max_turn_tokens + this) + max_turn_tokens + 1."
        },
    )
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
            "help": "Score the held-out questions (greedy, every row) against --heldout_engines at the start and "
            "the end; off by default: on two CPU cores it costs 10-25 s per question and engine."
        },
    )
    heldout_eval_steps: int | None = field(
        default=None, metadata={"help": "Also score them every N steps (default: start and end only)."}
    )
    heldout_engines: str | None = field(
        default=None,
        metadata={
            "help": "Engines the held-out questions are scored against, comma-separated, the yardstick first: "
            f"{', '.join(HELDOUT_ENGINES)} (e.g. bm25,simulated: the run's own sim-to-real gap); 'simulated' is "
            "the noise-free simulator, told the answers (an upper bound). Default: a real engine over the same "
            "facts (the engine itself, a hybrid's real part, BM25 over the demo corpus), then the simulator."
        },
    )
    mask_observations: bool = field(
        default=True,
        metadata={
            "help": "Exclude the search results from the loss (the paper's default). false: the loss-mask ablation "
            "(the <information> blocks are trained on as if the policy wrote them); HF generation only."
        },
    )
    continuous_batching: bool | None = field(
        default=None,
        metadata={
            "help": "Unset: each episode advances on its own where the trainer allows it (HF generation without "
            "ZeRO-3/FSDP, colocated vLLM), else in lockstep. false: always lockstep (every live episode's turn "
            "generated together; the baseline of bench_rollout.py). true: continuous, or an error saying why."
        },
    )
    tool_skip_drop: float = field(
        default=0.3,
        metadata={
            "help": "Tool-skip guard: warn when the share of episodes that search, averaged over 5 logged steps, "
            "falls this far below its best (or to 0)."
        },
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


@dataclass
class JobArguments:
    """The job's five argument groups, each defaulting to the CPU job's (:data:`CPU_DEFAULTS`, the embedded model).

    Example:
        >>> args = JobArguments.with_defaults(script=SearchScriptArguments(max_turns=3))
        >>> args.script.max_turns, args.engine.search_top_k, args.training.max_steps
        (3, 3, 4)
    """

    script: SearchScriptArguments
    engine: EngineArguments
    curriculum: CurriculumArguments
    training: Any  # a trl.GRPOConfig, or a SearchTrainingConfig
    model: Any  # a trl.ModelConfig

    @classmethod
    def with_defaults(
        cls,
        script: SearchScriptArguments | None = None,
        engine: EngineArguments | None = None,
        curriculum: CurriculumArguments | None = None,
        training: Any = None,
        model: Any = None,
    ) -> JobArguments:
        """The given groups, and the CPU job's defaults for those left out."""
        import torch
        from trl import ModelConfig

        return cls(
            script=script or SearchScriptArguments(**CPU_SCRIPT_DEFAULTS),
            engine=engine or EngineArguments(**CPU_ENGINE_DEFAULTS),
            curriculum=curriculum or CurriculumArguments(),
            training=training or SearchTrainingConfig(**CPU_DEFAULTS, use_cpu=not torch.cuda.is_available()),
            model=model or ModelConfig(),
        )


def argument_types() -> tuple[type, ...]:
    """The dataclasses that ``zerosearch-trl train`` parses, in :class:`JobArguments`' order."""
    from trl import ModelConfig

    return (SearchScriptArguments, EngineArguments, CurriculumArguments, SearchTrainingConfig, ModelConfig)


def schedule_from_args(args: CurriculumArguments) -> Any:
    """The :class:`~zerosearch_trl.training.schedules.Schedule` that ``args`` describe (raises on a bad setting)."""
    from zerosearch_trl.training.schedules import make_schedule

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
        from zerosearch_trl.training.ppo_config import check_ppo_config

        if not hasattr(training_args, "critic_learning_rate"):
            raise ValueError("--algorithm ppo needs a SearchPPOConfig (or SearchTrainingConfig) as training_args.")
        check_ppo_config(training_args, model_args.model_name_or_path or "default")
        if model_args.dtype in ("bfloat16", "float16"):
            raise ValueError(
                f"PPO with --dtype {model_args.dtype}: policy and critic would train {model_args.dtype} weights with "
                "plain AdamW, where most small updates round away. Use --dtype float32 --bf16 true (fp32 weights, "
                "bf16 compute)."
            )
    if engine_args.noise_prob:
        raise ValueError(
            f"--noise_prob {engine_args.noise_prob}: during training the curriculum sets the noise probability; "
            "for a fixed one use --schedule constant --noise_start P --noise_end P."
        )
    schedule_from_args(curriculum_args)
    resolve_rewards(script_args.rewards)
    if script_args.max_turns < 0:
        raise ValueError(f"max_turns must be >= 0, got {script_args.max_turns}.")
    check_generation_flags(training_args)
    check_episode_budget(
        training_args.max_completion_length,
        script_args.max_turns,
        script_args.max_turn_tokens,
        script_args.max_observation_tokens,
    )
    if script_args.continuous_batching and training_args.use_vllm and training_args.vllm_mode == "server":
        raise ValueError(
            "--continuous_batching true with --vllm_mode server: the server mode sends every process's rows in one "
            "request, in lockstep. Use --vllm_mode colocate, or leave --continuous_batching unset."
        )
    sharding = planned_sharding(training_args)
    if script_args.continuous_batching and not training_args.use_vllm and gathers_for_generation(sharding):
        raise ValueError(
            f"--continuous_batching true under {sharding}: generation gathers the sharded parameters collectively, "
            "so every process generates each turn together, in lockstep. Use DDP or ZeRO-1/2 "
            "(examples/accelerate/deepspeed_zero2.yaml), or leave --continuous_batching unset."
        )
    if not script_args.mask_observations and training_args.use_vllm:
        raise ValueError(
            "--mask_observations false (the loss-mask ablation) runs on HF generation only: vLLM's sampling logprobs "
            "do not cover the observation tokens. Drop --use_vllm, or keep --mask_observations true."
        )
    if script_args.heldout_questions < 0 or script_args.probe_samples < 0:
        raise ValueError("heldout_questions and probe_samples must be >= 0.")
    if not 0 < script_args.tool_skip_drop <= 1:
        raise ValueError(f"tool_skip_drop must be in (0, 1], got {script_args.tool_skip_drop}.")
    if script_args.heldout_eval_steps is not None and script_args.heldout_eval_steps < 1:
        raise ValueError(
            f"heldout_eval_steps must be >= 1 (or unset: start and end only), got {script_args.heldout_eval_steps}."
        )
    heldout_engine_names(script_args.heldout_engines)
    unused = [flag for flag in ("heldout_engines", "heldout_eval_steps") if getattr(script_args, flag) is not None]
    if unused and not script_args.heldout_eval:
        raise ValueError(f"--{unused[0]} needs the held-out evaluation, which is off: add --heldout_eval true.")
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


def heldout_engine_names(value: str | None) -> list[str]:
    """The names of ``--heldout_engines`` (``[]`` when unset), checked.

    Example:
        >>> heldout_engine_names("bm25, simulated")
        ['bm25', 'simulated']
    """
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in HELDOUT_ENGINES]
    if unknown or len(set(names)) != len(names) or (value is not None and not names):
        raise ValueError(
            f"--heldout_engines {value!r}: name each of {', '.join(HELDOUT_ENGINES)} at most once, comma-separated, "
            "e.g. --heldout_engines bm25,simulated."
        )
    return names


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
