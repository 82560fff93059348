"""A reward of your own next to the library's: F1 on the answer, minus a small cost per search.

The search rollout passes its per-episode extras to every reward function as keyword arguments
(``policy_turns``, ``num_searches``, ``search_queries``, ``noisy_fraction``, ``invalid_actions``, ``well_formed``),
next to the dataset columns (``golden_answers``...). A reward that reads text should read ``policy_turns`` (what
the policy itself generated, turn by turn), not the completion, which also holds what the environment wrote. Use it from the command line (run from this folder, or put it on
PYTHONPATH):

    zerosearch-trl train --rewards f1 format custom_reward:search_cost_reward

or in Python: ``GRPOTrainer(..., reward_funcs=[zs.f1_reward, search_cost_reward])``.
"""

from __future__ import annotations

from typing import Any

SEARCH_COST = 0.05


def search_cost_reward(completions: list[Any], num_searches: list[int], **kwargs: Any) -> list[float]:
    """``-0.05`` per search made: with F1 as the main reward, it prefers the shortest path to a right answer.

    Example:
        >>> search_cost_reward(["..."] * 2, num_searches=[0, 2])
        [0.0, -0.1]
    """
    return [0.0 - SEARCH_COST * n for n in num_searches]
