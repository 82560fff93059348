"""PPO with a critic for multi-turn search episodes (TRL 1.x ships no ``PPOTrainer``).

:class:`SearchPPOTrainer` subclasses TRL's ``GRPOTrainer`` rather than ``transformers.Trainer``: generation through
the same ``rollout_func`` (HF generate, colocated or served vLLM, weight sync), the reward functions, the reference
model (or the disabled LoRA adapter), the importance-sampling correction and the clipped token-level policy loss,
which accepts per-token advantages, all stay TRL's. Rebuilding them on ``transformers.Trainer`` would copy most of
``GRPOTrainer`` and drift from it at every TRL release; the subclass adds only what PPO has and GRPO lacks, in three
overrides of documented-by-use hooks (``_generate_and_score_completions``, ``_compute_loss``, ``training_step``):

- a critic, by default initialised from the policy's checkpoint as in the paper (a transformers
  ``AutoModelForTokenClassification`` with one label: the backbone plus a scalar value head), with its own AdamW
  optimiser (``critic_learning_rate``, the paper's 1e-5), a LoRA of its own when the policy has one;
- per-token rewards: the episode reward at the last model token, minus ``beta`` times the k1 estimate
  ``log pi_old - log pi_ref`` at every model token (the KL penalty folded into the reward, as the paper's PPO does;
  TRL's k3 KL loss term is switched off for this trainer);
- GAE over model tokens only: observation tokens (``env_mask = 0``) are skipped, so they carry no advantage, no
  return and no value loss, and the value of the model token after an observation bootstraps the one before it;
  advantages are whitened over the model tokens of every process's batch;
- a clipped value loss (``cliprange_value``, the paper's 0.5) added to the policy loss; each optimiser only holds
  its own model's parameters, so each loss moves only its own model.

Logged: ``ppo/value_loss``, ``ppo/explained_variance``, ``ppo/kl``, ``ppo/returns``, ``ppo/values``, beside TRL's
metrics. The critic is saved in every checkpoint (``critic_state.pt``, restored on resume) and next to the final
model (``critic/``).

Its configuration and the checks that run before any model loads are in :mod:`~zerosearch_trl.training.ppo_config`.

Example:
    >>> from zerosearch_trl.training.ppo_config import SearchPPOConfig
    >>> config = SearchPPOConfig(output_dir="runs/ppo", use_cpu=True, bf16=False)
    >>> config.critic_learning_rate, config.gamma, config.lam, config.cliprange_value, config.beta
    (1e-05, 1.0, 1.0, 0.5, 0.001)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zerosearch_trl.training.guards import all_finite
from zerosearch_trl.training.ppo_config import check_ppo_config, check_trainable_precision
from zerosearch_trl.training.reinforce import EpisodeRewardTrainer

logger = logging.getLogger(__name__)


def masked_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the positions where ``mask`` is 1, skipping the others.

    A masked position (an observation token) is not a step of the agent: the next model token's value bootstraps
    the previous model token, and masked positions get advantage and return 0.

    Args:
        rewards, values, mask: ``(batch, tokens)``.
        gamma, lam: discount and GAE lambda.

    Returns:
        ``(advantages, returns)``, each ``(batch, tokens)``, with ``returns = advantages + values`` on model tokens.

    Example:
        >>> r = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
        >>> v = torch.tensor([[0.5, 9.0, 0.25, 0.75]])
        >>> m = torch.tensor([[1, 0, 1, 1]])
        >>> masked_gae(r, v, m)[0]  # gamma = lam = 1: the return to go minus the value
        tensor([[0.5000, 0.0000, 0.7500, 0.2500]])
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        live = mask[:, t] > 0
        advantages[:, t] = torch.where(live, advantage, torch.zeros_like(advantage))
        next_value = torch.where(live, values[:, t], next_value)
        next_advantage = torch.where(live, advantage, next_advantage)
    return advantages, (advantages + values) * mask


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def whiten(
    values: torch.Tensor, mask: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Zero mean, unit variance over the masked positions; the others stay 0.

    Args:
        values, mask: ``(batch, tokens)``.
        reduce: sums a tensor across processes (``lambda t: accelerator.reduce(t, "sum")``), so that the mean and
            variance are those of every process's masked positions; default: this tensor's alone.

    Example:
        >>> whiten(torch.tensor([[1.0, 100.0, 3.0]]), torch.tensor([[1.0, 0.0, 1.0]]))
        tensor([[-1.,  0.,  1.]])
    """
    sums = torch.stack([mask.sum(), (values * mask).sum(), (values**2 * mask).sum()]).double()
    count, total, squares = reduce(sums) if reduce is not None else sums
    count = count.clamp(min=1.0)
    mean = total / count
    variance = (squares / count - mean**2).clamp(min=0.0)
    return ((values - mean) * torch.rsqrt(variance + 1e-8) * mask).to(values.dtype)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> torch.Tensor:
    """PPO's value loss: half the larger squared error of the new values and of the values clipped to ``clip``
    around ``old_values``, averaged over the masked (model) tokens only.

    Example:
        >>> v, old, ret = torch.tensor([[2.0, 5.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])
        >>> clipped_value_loss(v, old, ret, torch.tensor([[1.0, 0.0]]), clip=0.5)  # max(1, 0.25) / 2
        tensor(0.5000)
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * _masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


class SearchPPOTrainer(EpisodeRewardTrainer):
    """PPO for search agents on top of ``GRPOTrainer`` (see the module docstring).

    Args:
        critic: a ready critic (an ``AutoModelForTokenClassification`` with one label); default: loaded from
            ``args.critic_model_name_or_path``, else from the policy's checkpoint.
        *args, **kwargs: as for ``GRPOTrainer`` (``model``, ``reward_funcs``, ``args`` a :class:`SearchPPOConfig`,
            ``rollout_func=make_search_rollout(engine)``, ``peft_config``, callbacks...).

    Example:
        >>> trainer = SearchPPOTrainer(  # doctest: +SKIP
        ...     model="Qwen/Qwen2.5-3B-Instruct", reward_funcs=[zs.f1_reward], train_dataset=task.dataset,
        ...     rollout_func=zs.make_search_rollout(engine), args=SearchPPOConfig(output_dir="runs/ppo"),
        ... )
    """

    _tag_names = ["trl", "ppo", "zerosearch-trl"]

    def __init__(self, *args: Any, critic: Any = None, **kwargs: Any) -> None:
        config = kwargs.get("args")
        if config is None or not hasattr(config, "critic_learning_rate"):
            raise TypeError("SearchPPOTrainer needs args=SearchPPOConfig(...) (the critic's and GAE's settings).")
        if config.beta == 0:
            logger.warning("beta=0: PPO runs without a KL penalty and TRL loads no reference model.")
        check_ppo_config(config)
        super().__init__(*args, **kwargs)
        critic = critic if critic is not None else self._load_critic(kwargs)
        check_trainable_precision(self.model, "policy")
        check_trainable_precision(critic, "critic")
        if self.args.gradient_checkpointing:
            self._checkpoint_activations(critic)
        self.critic = self.accelerator.prepare(critic)
        trainable = [p for p in self.critic.parameters() if p.requires_grad]
        self.critic_optimizer = torch.optim.AdamW(
            trainable, lr=self.args.critic_learning_rate, weight_decay=self.args.weight_decay
        )

    def _load_critic(self, kwargs: dict[str, Any]) -> Any:
        from transformers import AutoConfig, AutoModelForTokenClassification

        from zerosearch_trl.models import resolve_model_path

        policy = self.accelerator.unwrap_model(self.model)
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        source = self.args.critic_model_name_or_path or base.config._name_or_path
        if not source:
            raise ValueError(
                "The policy was built in memory (no checkpoint path) and no critic is given: pass "
                "critic_model_name_or_path in SearchPPOConfig, or critic= to SearchPPOTrainer."
            )
        path = resolve_model_path(source)
        # One output (the value); no dropout, whose default of 0.1 would make the values noisy.
        config = AutoConfig.from_pretrained(path, num_labels=1, classifier_dropout=0.0)
        critic = AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=base.dtype)
        critic.config.pad_token_id = base.config.pad_token_id
        peft_config = kwargs.get("peft_config")
        if peft_config is not None:  # the critic gets its own adapter; its value head trains in full
            from peft import LoraConfig, get_peft_model

            critic = get_peft_model(
                critic,
                LoraConfig(
                    r=peft_config.r,
                    lora_alpha=peft_config.lora_alpha,
                    target_modules=peft_config.target_modules,
                    lora_dropout=0.0,
                    task_type="TOKEN_CLS",
                ),
            )
        return critic

    def _checkpoint_activations(self, critic: Any) -> None:
        """Activation checkpointing for the critic, with the policy's settings: the value loss backpropagates
        through the critic over the same long episodes, and without it the critic would keep every layer's
        activations, which the policy does not."""
        settings = self.args.gradient_checkpointing_kwargs or {}
        # transformers 5.x renamed the method; the old name is a deprecated alias, the only one in early 5.x.
        enable = getattr(critic, "activation_checkpointing_enable", None) or critic.gradient_checkpointing_enable
        enable(settings)
        if settings.get("use_reentrant", True) and hasattr(critic, "enable_input_require_grads"):
            critic.enable_input_require_grads()  # reentrant checkpoints pass no gradient to frozen embeddings' users
        critic.config.use_cache = False

    def _values(self, inputs: dict[str, Any], batch_size: int | None = None) -> torch.Tensor:
        """The critic's value of the state before each completion token, ``(batch, completion tokens)``; computed
        ``batch_size`` rows at a time when given (TRL's ``per_device_train_batch_size``, as for its log-probs)."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        n = inputs["completion_ids"].size(1)
        step = batch_size or input_ids.size(0)
        chunks = [
            self.critic(input_ids=input_ids[i : i + step], attention_mask=attention_mask[i : i + step]).logits
            for i in range(0, input_ids.size(0), step)
        ]
        return torch.cat(chunks)[:, -n - 1 : -1, 0].float()

    @staticmethod
    def _model_token_mask(output: dict[str, Any]) -> torch.Tensor:
        mask = output["completion_mask"]
        if output.get("tool_mask") is not None:
            mask = mask * output["tool_mask"]
        return mask.float()

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mask = self._model_token_mask(output)
        rewards = self.local_episode_rewards(output["completion_ids"].size(0)).to(mask.device)
        batch_size = self.args.per_device_train_batch_size  # TRL's chunk for its own passes over the batch
        with torch.no_grad():
            values = self._values(output, batch_size) * mask
            old_logps = output.get("old_per_token_logps")
            if old_logps is None and self.beta != 0.0:
                # TRL skips these when the ratio is 1 by construction; the KL penalty needs them.
                input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
                attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
                old_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, output["completion_ids"].size(1), batch_size=batch_size
                )
        token_rewards = torch.zeros_like(values)
        kl = torch.zeros_like(values)
        if self.beta != 0.0:
            kl = (old_logps - output["ref_per_token_logps"]) * mask
            token_rewards = token_rewards - self.beta * kl
        # The episode reward lands on each row's last model token (rows without one have no loss at all).
        positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
        last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(dim=1).values
        has_model_token = last >= 0
        rows = torch.nonzero(has_model_token).squeeze(1)
        token_rewards[rows, last[has_model_token]] += rewards[has_model_token].to(token_rewards.dtype)
        advantages, returns = masked_gae(token_rewards, values, mask, self.args.gamma, self.args.lam)
        if self.args.whiten_advantages:  # over every process's model tokens, not this process's alone
            advantages = whiten(advantages, mask, reduce=lambda t: self.accelerator.reduce(t, "sum"))
        output.update(advantages=advantages, returns=returns, old_values=values)
        self._log_rollout_metrics(values, returns, kl, mask)
        # the completions table has one advantage per episode: its mean over the episode's model tokens
        self.log_episode_advantages((advantages * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0))
        return output

    def _log_rollout_metrics(
        self, values: torch.Tensor, returns: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor
    ) -> None:
        # Sums over model tokens, added up across processes (their tensors differ in width, so no gather).
        error = returns - values
        sums = torch.stack(
            [mask.sum()] + [(x * mask).sum() for x in (values, returns, returns**2, error, error**2, kl)]
        ).double()
        n, values_sum, returns_sum, returns_sq, error_sum, error_sq, kl_sum = self.accelerator.reduce(sums, "sum")
        n = n.clamp(min=1.0)
        returns_variance = returns_sq / n - (returns_sum / n) ** 2
        error_variance = error_sq / n - (error_sum / n) ** 2
        metrics = self._metrics["train" if self.model.training else "eval"]
        explained = 1.0 - error_variance / returns_variance if returns_variance > 1e-12 else float("nan")
        metrics["ppo/explained_variance"].append(float(explained))
        metrics["ppo/values"].append(float(values_sum / n))
        metrics["ppo/returns"].append(float(returns_sum / n))
        metrics["ppo/kl"].append(float(kl_sum / n))

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        beta, self.beta = self.beta, 0.0  # the KL is in the rewards: keep TRL's k3 loss term out
        try:
            policy_loss = super()._compute_loss(model, inputs)
        finally:
            self.beta = beta
        value_loss = clipped_value_loss(
            self._values(inputs),
            inputs["old_values"],
            inputs["returns"],
            self._model_token_mask(inputs),
            self.args.cliprange_value,
        )
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["ppo/value_loss"].append(float(self.accelerator.gather(value_loss.detach()).mean()))
        if mode == "eval":
            return policy_loss
        # TRL's policy loss is already divided for gradient accumulation; the value loss must be too.
        return policy_loss + value_loss / self.current_gradient_accumulation_steps

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        self.critic.train()
        loss = super().training_step(model, inputs, num_items_in_batch)  # backward reaches the critic too
        # The critic steps when the policy's optimiser does: at the end of each accumulation window, which the
        # trainer marks (the last window of an epoch may be shorter than gradient_accumulation_steps).
        if self.accelerator.sync_gradients:
            if self.args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.args.max_grad_norm)
            # As TrainingGuardCallback does for the policy: a NaN or inf gradient must not reach the weights.
            if all_finite(p.grad for p in self.critic.parameters() if p.grad is not None):
                self.critic_optimizer.step()
            else:
                logger.warning(
                    "Step %d: the critic's gradients hold NaN or inf; its update was skipped.",
                    self.state.global_step + 1,
                )
            self.critic_optimizer.zero_grad(set_to_none=True)
        return loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            state = {
                "critic": self.accelerator.unwrap_model(self.critic).state_dict(),
                "optimizer": self.critic_optimizer.state_dict(),
            }
            torch.save(state, folder / "critic_state.pt")

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = Path(checkpoint) / "critic_state.pt" if checkpoint else None
        if path is not None and path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.accelerator.unwrap_model(self.critic).load_state_dict(state["critic"])
            self.critic_optimizer.load_state_dict(state["optimizer"])

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if not _internal_call and self.args.should_save:  # the final export (checkpoints hold critic_state.pt)
            self.accelerator.unwrap_model(self.critic).save_pretrained(
                Path(output_dir or self.args.output_dir) / "critic"
            )
