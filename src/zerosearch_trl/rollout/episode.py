"""One episode while it is played: the token ids, the loss mask and the counters that the rollout returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zerosearch_trl.engines.base import Document
from zerosearch_trl.generation.base import Generation, GenerationParams
from zerosearch_trl.protocol import is_well_formed


@dataclass
class Episode:
    """One row's trajectory while it is played.

    ``policy_turns`` holds the text of each turn the policy generated (its ``env_mask = 1`` tokens, decoded turn by
    turn): what rewards, format checks and evaluation read, never the observations between them.
    """

    prompt_ids: list[int]
    question: str | None
    golden_answers: tuple[str, ...]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    policy_turns: list[str] = field(default_factory=list)
    search_queries: list[str] = field(default_factory=list)
    documents: list[list[Document]] = field(default_factory=list)
    retrieved: list[tuple[int, int]] = field(default_factory=list)  # each <information> block's token span
    turns: int = 0
    generation_errors: int = 0
    noisy_searches: int = 0
    invalid_actions: int = 0
    observation_tokens: int = 0
    observations_cut: int = 0
    done: bool = False
    truncated: bool = False

    def extend(self, ids: Sequence[int], from_model: bool, logprobs: Sequence[float | None] | None = None) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([int(from_model)] * len(ids))
        # Observation tokens were not sampled: 0.0 is a placeholder that TRL masks with env_mask.
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        if not from_model:
            self.observation_tokens += len(ids)

    def mask_with_retrieved(self) -> list[int]:
        """``env_mask`` with the search results' tokens set to 1 (the loss-mask ablation): what the environment
        wrote otherwise (corrective messages, the closing EOS) stays 0."""
        mask = list(self.env_mask)
        for start, end in self.retrieved:
            mask[start:end] = [1] * (end - start)
        return mask

    def drop_last(self) -> None:
        del self.completion_ids[-1], self.env_mask[-1], self.logprobs[-1]


GenerateIds = Callable[[list[list[int]], GenerationParams], "list[Generation] | None"]
"""One batched generation from token ids (the policy's turn for every live row)."""


def is_well_formed_episode(episode: Episode) -> bool:
    """Whether ``episode`` ended untruncated and the policy's own turns follow the protocol (see
    :func:`~zerosearch_trl.protocol.is_well_formed`); what the environment wrote is not read."""
    return not episode.truncated and is_well_formed(episode.policy_turns)


DEFAULT_TURN_TOKENS = 500
"""Model tokens per turn, the paper's setting (its ``max_response_length``)."""

DEFAULT_OBSERVATION_TOKENS = 500
"""Tokens per search result, the paper's setting (its ``max_obs_length``): a longer result is cut, not the episode."""


def episode_budget(max_turns: int, max_turn_tokens: int, max_observation_tokens: int) -> int:
    """The completion length that always leaves room for the answer: ``max_turns`` turns that search, each with
    its observation, then the answer turn and the closing EOS.

    Example:
        >>> episode_budget(max_turns=2, max_turn_tokens=500, max_observation_tokens=500)  # the paper's setting
        2501
    """
    return max_turns * (max_turn_tokens + max_observation_tokens) + max_turn_tokens + 1


def check_turn_budgets(max_turn_tokens: int, max_observation_tokens: int) -> None:
    """Raise a ValueError naming a per-turn budget that is not a whole number of at least 16 tokens."""
    for name, value in (("max_turn_tokens", max_turn_tokens), ("max_observation_tokens", max_observation_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 16:
            raise ValueError(f"{name} must be an integer >= 16, got {value!r}.")


def check_episode_budget(
    max_completion_length: int, max_turns: int, max_turn_tokens: int, max_observation_tokens: int
) -> None:
    """Raise a ValueError, naming the numbers and the fixes, when ``max_completion_length`` cannot hold
    ``max_turns`` searches and the answer (:func:`episode_budget`)."""
    check_turn_budgets(max_turn_tokens, max_observation_tokens)
    needed = episode_budget(max_turns, max_turn_tokens, max_observation_tokens)
    if not isinstance(max_completion_length, int) or max_completion_length < needed:
        raise ValueError(
            f"max_completion_length {max_completion_length!r} cannot hold {max_turns} searches and an answer: "
            f"{max_turns} x (max_turn_tokens {max_turn_tokens} + max_observation_tokens {max_observation_tokens}) "
            f"+ max_turn_tokens {max_turn_tokens} + 1 (EOS) = {needed} tokens. Raise max_completion_length to "
            f"{needed}, or lower max_turn_tokens, max_observation_tokens or max_turns: an episode cut off before "
            "its answer scores 0."
        )
