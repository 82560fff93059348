"""REINFORCE with the search rollout: GRPO's clipped objective, with the episode reward as every token's advantage.

The paper's critic-free variant scores each model token of an episode with the episode's reward. TRL's
``GRPOConfig`` cannot say that: every ``scale_rewards`` setting subtracts the per-prompt group mean
(``scale_rewards="none"`` is REINFORCE with a per-prompt baseline, Dr. GRPO's advantage), and no reward transform
undoes that subtraction. So :class:`SearchReinforceTrainer` is a minimal ``GRPOTrainer`` subclass that replaces
only the advantage, after TRL has computed everything else (rollout, rewards, reference log-probs, masks). Because
it keeps TRL's loss, the KL term is TRL's: the k3 estimator *added* to the loss with ``beta`` (the paper's code
subtracted it, which pushed the policy away from the reference). With one optimisation pass per generation
(``num_iterations=1``, TRL's default) the clipped ratio is exactly 1, so the gradient is the REINFORCE gradient
``-A * grad log pi`` over model tokens; observation tokens (``env_mask = 0``) carry no loss.

Baselines (``reinforce_baseline``):

- ``"batch_mean"`` (default): the advantage is the reward minus the mean reward of the generation batch (all
  processes). A baseline leaves the gradient unbiased and cuts its variance; without one, with rewards in
  [0, 1] every sampled episode is pushed up, the well-formed and the wrong alike.
- ``"none"``: the raw reward, as the paper's reference code did; for reproducing it.

Example:
    >>> config = SearchReinforceConfig(output_dir="runs/reinforce", reinforce_baseline="none", use_cpu=True, bf16=False)
    >>> config.reinforce_baseline
    'none'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

BASELINES = ("batch_mean", "none")


def reinforce_advantages(
    rewards_per_func: torch.Tensor, weights: torch.Tensor, baseline: str = "batch_mean"
) -> torch.Tensor:
    """One advantage per episode from the per-function rewards of a generation batch.

    Args:
        rewards_per_func: ``(episodes, reward functions)``, NaN where a function did not score a row.
        weights: one weight per reward function (``GRPOConfig.reward_weights``; ones by default).
        baseline: ``"batch_mean"`` or ``"none"``.

    Returns:
        ``(episodes,)``: the weighted reward (minus the batch mean of the scorable episodes with
        ``"batch_mean"``); an episode that no function scored gets 0.

    Example:
        >>> reinforce_advantages(torch.tensor([[1.0], [0.0], [0.5]]), torch.ones(1))
        tensor([ 0.5000, -0.5000,  0.0000])
        >>> reinforce_advantages(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.tensor([1.0, 0.5]), "none")
        tensor([1.5000, 0.5000])
    """
    if baseline not in BASELINES:
        raise ValueError(f"reinforce_baseline must be one of {', '.join(BASELINES)}, got {baseline!r}.")
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    if baseline == "batch_mean":
        rewards = rewards - torch.nanmean(rewards)
    return torch.nan_to_num(rewards, nan=0.0)


@dataclass
class SearchReinforceConfig(GRPOConfig):
    """``GRPOConfig`` plus the REINFORCE baseline. ``num_generations`` (>= 2, TRL's rule) only sets how many
    episodes each prompt gets; no group statistic enters the advantage.

    Args:
        reinforce_baseline: ``"batch_mean"`` (default: unbiased, lower variance) or ``"none"`` (the paper's code).

    Example:
        >>> SearchReinforceConfig(output_dir="/tmp/reinforce-doc", use_cpu=True, bf16=False, report_to="none").reinforce_baseline
        'batch_mean'
        >>> SearchReinforceConfig(output_dir="/tmp/reinforce-doc", reinforce_baseline="mean")
        Traceback (most recent call last):
        ...
        ValueError: reinforce_baseline must be one of batch_mean, none, got 'mean'.
    """

    reinforce_baseline: str = field(
        default="batch_mean",
        metadata={"help": "REINFORCE baseline: 'batch_mean' (reward minus the batch mean) or 'none' (raw reward)."},
    )

    def __post_init__(self) -> None:
        if self.reinforce_baseline not in BASELINES:
            raise ValueError(
                f"reinforce_baseline must be one of {', '.join(BASELINES)}, got {self.reinforce_baseline!r}."
            )
        super().__post_init__()


class EpisodeRewardTrainer(GRPOTrainer):
    """A ``GRPOTrainer`` that keeps the episode rewards of the last generation batch, for subclasses that compute
    their own advantages (:class:`SearchReinforceTrainer`, :class:`~zerosearch_trl.training.ppo.SearchPPOTrainer`).

    Example:
        >>> class RawRewardTrainer(EpisodeRewardTrainer):  # doctest: +SKIP
        ...     def _generate_and_score_completions(self, inputs):
        ...         output = super()._generate_and_score_completions(inputs)
        ...         output["advantages"] = self.local_episode_rewards(output["completion_ids"].size(0))
        ...         return output
    """

    def _calculate_rewards(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        # TRL gathers the rewards of every process here and keeps no copy in what it returns: hold on to them.
        self._rewards_per_func = super()._calculate_rewards(*args, **kwargs)
        return self._rewards_per_func

    def local_episode_rewards(self, n: int, baseline: str = "none") -> torch.Tensor:
        """This process's ``n`` rows of :func:`reinforce_advantages` over the whole generation batch."""
        rewards = reinforce_advantages(self._rewards_per_func, self.reward_weights, baseline)
        start = self.accelerator.process_index * n  # rows are gathered in process order
        return rewards[start : start + n]

    def log_episode_advantages(self, local: torch.Tensor) -> None:
        """Show ``local`` (this process's per-episode advantages) in TRL's completions table instead of the GRPO
        advantage that ``GRPOTrainer`` logged before the subclass replaced it. Every process must call it."""
        everyone = self.accelerator.gather(local.detach().float()).tolist()
        logged = self._logs["advantages"]
        for _ in range(min(len(everyone), len(logged))):
            logged.pop()
        logged.extend(everyone)


class SearchReinforceTrainer(EpisodeRewardTrainer):
    """``GRPOTrainer`` with REINFORCE advantages (see the module docstring); everything else is TRL's.

    Takes the same arguments as ``GRPOTrainer`` (``rollout_func=make_search_rollout(engine)``, reward functions,
    callbacks such as :class:`~zerosearch_trl.CurriculumCallback`), with ``args`` a :class:`SearchReinforceConfig`
    (a plain ``GRPOConfig`` means the default baseline).

    Example:
        >>> trainer = SearchReinforceTrainer(  # doctest: +SKIP
        ...     model=model, processing_class=tokenizer, train_dataset=task.dataset, reward_funcs=[zs.f1_reward],
        ...     rollout_func=zs.make_search_rollout(engine), args=SearchReinforceConfig(output_dir="out"),
        ... )
    """

    _tag_names = ["trl", "grpo", "reinforce", "zerosearch-trl"]

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        baseline = getattr(self.args, "reinforce_baseline", "batch_mean")
        advantages = self.local_episode_rewards(output["completion_ids"].size(0), baseline)
        output["advantages"] = advantages.to(output["advantages"].device)
        self.log_episode_advantages(output["advantages"])
        return output
