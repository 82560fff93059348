"""PPO's configuration, and every check that refuses a PPO run before any model loads.

The critic of :class:`~zerosearch_trl.training.ppo.SearchPPOTrainer` trains with its own AdamW outside accelerate's
sharding and loss scaling: PPO runs on one process or under DDP, in fp32 or with bf16 compute over fp32 weights,
and is refused under DeepSpeed, FSDP, fp16 or half-precision weights, with the fix named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig

from zerosearch_trl.rollout.policy import planned_sharding

PPO_LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")
"""TRL loss types that are PPO's clipped surrogate (the others change the objective itself)."""


@dataclass
class SearchPPOConfig(GRPOConfig):
    """``GRPOConfig`` plus PPO's critic and GAE settings; the paper's defaults.

    ``beta`` is the KL coefficient (the paper's 0.001), applied as a penalty in the per-token reward. Group settings
    of GRPO (``scale_rewards``, ``multi_objective_aggregation``) play no part; ``num_generations`` (>= 2, TRL's
    rule) only sets how many episodes each prompt gets.

    Args:
        critic_model_name_or_path: the critic's initial weights (default: the policy's checkpoint, as in the paper).
        critic_learning_rate: the critic's AdamW learning rate (paper: 1e-5).
        gamma: GAE discount over model tokens (paper: 1.0).
        lam: GAE lambda (paper: 1.0).
        cliprange_value: clip range of the value loss around the values at generation time (paper: 0.5).
        whiten_advantages: normalise advantages to zero mean and unit variance over the batch's model tokens.

    Example:
        >>> SearchPPOConfig(output_dir="/tmp/ppo-doc", use_cpu=True, bf16=False, report_to="none").critic_learning_rate
        1e-05
    """

    critic_model_name_or_path: str | None = field(
        default=None, metadata={"help": "PPO: the critic's initial weights (default: the policy's checkpoint)."}
    )
    critic_learning_rate: float = field(default=1e-5, metadata={"help": "PPO: the critic's learning rate."})
    gamma: float = field(default=1.0, metadata={"help": "PPO: GAE discount over model tokens (paper: 1.0)."})
    lam: float = field(default=1.0, metadata={"help": "PPO: GAE lambda (paper: 1.0)."})
    cliprange_value: float = field(default=0.5, metadata={"help": "PPO: value loss clip range (paper: 0.5)."})
    whiten_advantages: bool = field(default=True, metadata={"help": "PPO: whiten advantages over model tokens."})
    beta: float = field(default=0.001, metadata={"help": "KL coefficient (paper: 0.001); PPO: k1 in the reward."})

    def __post_init__(self) -> None:
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"gamma and lam must be in [0, 1], got gamma={self.gamma}, lam={self.lam}.")
        if self.cliprange_value <= 0 or self.critic_learning_rate <= 0:
            raise ValueError(
                f"cliprange_value and critic_learning_rate must be > 0, got {self.cliprange_value} and "
                f"{self.critic_learning_rate}."
            )
        super().__post_init__()


def check_ppo_config(args: Any, policy: str | None = None) -> None:
    """Raise a ValueError naming a setting that only makes sense for GRPO, or a critic that cannot read the
    policy's tokens; reads configs only (no weights), so the command line runs it before any model loads.

    Args:
        args: a :class:`SearchPPOConfig` (or the command line's config that includes its fields).
        policy: the policy's folder or hub id, to check the critic against (``None``: skip that check).

    Example:
        >>> check_ppo_config(SearchPPOConfig(output_dir="out", use_cpu=True, bf16=False, loss_type="cispo"))
        Traceback (most recent call last):
        ...
        ValueError: loss_type='cispo' is not PPO's clipped surrogate; use one of dapo, bnpo, grpo, dr_grpo.
    """
    if args.multi_objective_aggregation != "sum_then_normalize":
        raise ValueError(
            f"multi_objective_aggregation={args.multi_objective_aggregation!r} normalises rewards per GRPO group; "
            "PPO's advantage comes from the critic and GAE: leave it at 'sum_then_normalize' (the weighted sum)."
        )
    if args.loss_type not in PPO_LOSS_TYPES:
        raise ValueError(
            f"loss_type={args.loss_type!r} is not PPO's clipped surrogate; use one of {', '.join(PPO_LOSS_TYPES)}."
        )
    if args.beta < 0:
        raise ValueError(f"beta (the KL coefficient) must be >= 0, got {args.beta}.")
    sharded = planned_sharding(args)
    if sharded:
        raise ValueError(
            f"PPO under {sharded} is not supported: the critic trains with its own AdamW, outside accelerate's "
            "sharding, so its optimiser would see empty shards. Train PPO on one process or with DDP "
            "(examples/accelerate/multi_gpu.yaml), or use --algorithm grpo or reinforce under ZeRO/FSDP."
        )
    if getattr(args, "fp16", False):
        raise ValueError(
            "PPO with fp16: the loss scaling would reach the critic's gradients unscaled. Use --bf16 true (with "
            "fp32 weights) or full precision."
        )
    critic = args.critic_model_name_or_path or policy
    if critic is None or policy is None:
        return
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES

    from zerosearch_trl.models import resolve_model_path

    critic_config = AutoConfig.from_pretrained(resolve_model_path(critic))
    if critic_config.model_type not in MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES:
        raise ValueError(
            f"The critic {critic!r} is a {critic_config.model_type!r} model, which transformers cannot load with a "
            "value head (AutoModelForTokenClassification); choose a critic of a supported architecture, e.g. the "
            "policy's own checkpoint."
        )
    policy_vocab = AutoConfig.from_pretrained(resolve_model_path(policy)).vocab_size
    if critic_config.vocab_size != policy_vocab:
        raise ValueError(
            f"The critic {critic!r} has a vocabulary of {critic_config.vocab_size} tokens, the policy {policy!r} "
            f"{policy_vocab}: the critic reads the policy's token ids, so it must share its tokenizer."
        )


def check_trainable_precision(model: Any, name: str) -> None:
    """Raise when ``model`` would train half-precision weights with plain AdamW: an update of 1e-6 changes about 2%
    of N(0, 0.02) bfloat16 weights, so most updates round away. Keep fp32 weights and compute in bf16."""
    halves = {
        str(p.dtype) for p in model.parameters() if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)
    }
    if halves:
        raise ValueError(
            f"The {name} trains {'/'.join(sorted(halves))} weights with plain AdamW, where most small updates round "
            "away. Load it in float32 and compute in bf16: --dtype float32 --bf16 true (dtype=torch.float32 with "
            "bf16=True in the config)."
        )
