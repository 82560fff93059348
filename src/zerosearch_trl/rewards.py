"""Answer extraction and TRL reward functions (the scoring itself is :mod:`zerosearch_trl.answers`).

Every reward function has TRL's signature ``(completions, **kwargs) -> list[float]``: it reads the
completions (plain strings or conversational message lists) and the dataset's ``golden_answers`` column
(or ``answer`` when that is absent). Only what the policy generated is read, never the prompt (prompts hold
example ``<answer>`` tags): when the search rollout provides ``policy_turns`` (each turn the policy generated,
without the observations and corrective messages the environment wrote between them), that is what is read;
otherwise the completion, with its ``<information>`` blocks removed. The answer is the LAST ``<answer>`` the
policy wrote; a completion without one scores 0. No reward function raises on any text.

Example:
    >>> from zerosearch_trl.rewards import f1_reward
    >>> f1_reward(["<answer> the Eiffel Tower </answer>"], golden_answers=[["Eiffel Tower"]])
    [1.0]

Combine them with your own through ``GRPOConfig(reward_weights=[...])``:
    >>> trainer = GRPOTrainer(..., reward_funcs=[f1_reward, format_reward, my_reward])  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from zerosearch_trl.answers import cover_exact_match, exact_match, f1_score, normalize_answer
from zerosearch_trl.protocol import is_well_formed, strip_observations

# The scores themselves live in answers.py; they stay importable from here, where they were first published.
__all__ = [
    "cover_em_reward",
    "cover_exact_match",
    "exact_match",
    "exact_match_reward",
    "extract_answer",
    "f1_reward",
    "f1_score",
    "format_reward",
    "normalize_answer",
]

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text the policy generated: a string as is; the policy's turns (a list of strings) or, for chat
    messages, the assistant turns, joined."""
    if isinstance(completion, str):
        return completion
    if _is_turns(completion):
        return "\n".join(completion)
    if isinstance(completion, dict):
        completion = [completion]
    parts: list[str] = []
    for message in completion or []:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # multimodal-style content parts
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def extract_answer(completion: Any) -> str | None:
    """The content of the last complete ``<answer>`` the policy wrote, or ``None``.

    ``completion`` is a transcript, chat messages, or the policy's own turns (the rollout's ``policy_turns``).
    ``<information>`` blocks (written by the search engine, not the policy) are ignored.

    Example:
        >>> extract_answer("<answer>1</answer> on second thought <answer> 2 </answer>")
        '2'
    """
    matches = _ANSWER.findall(strip_observations(completion_text(completion)))
    return matches[-1].strip() if matches else None


def _golds_column(kwargs: dict[str, Any], n: int) -> list[Any]:
    for column in ("golden_answers", "answer"):
        if kwargs.get(column) is not None:
            values = list(kwargs[column])
            if len(values) != n:
                raise ValueError(f"Column {column!r} has {len(values)} rows but there are {n} completions.")
            return values
    raise ValueError(
        "Answer rewards need gold answers: the dataset must have a 'golden_answers' (or 'answer') column; "
        f"got columns {sorted(k for k in kwargs if k not in ('completions', 'prompts'))}. "
        "load_qa_dataset() produces 'golden_answers'."
    )


def policy_texts(completions: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """What the policy itself generated, per row: the rollout's ``policy_turns`` when the reward function got them
    (the search rollout provides them), else the completions as given.

    Example:
        >>> policy_texts(["<answer> x </answer>"], {"policy_turns": [["<think>a</think> no answer"]]})
        [['<think>a</think> no answer']]
    """
    turns = kwargs.get("policy_turns")
    if turns is None:
        return list(completions)
    turns = list(turns)
    if len(turns) != len(completions):
        raise ValueError(f"Column 'policy_turns' has {len(turns)} rows but there are {len(completions)} completions.")
    return turns


def _answer_reward(metric: Callable[[str | None, Any], float], name: str, doc: str):
    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        golds = _golds_column(kwargs, len(completions))
        return [metric(extract_answer(c), g) for c, g in zip(policy_texts(completions, kwargs), golds)]

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = doc
    return reward


f1_reward = _answer_reward(
    f1_score,
    "f1_reward",
    """Token F1 of the last generated ``<answer>`` against ``golden_answers`` (the paper's training reward).

    Example:
        >>> f1_reward(["<answer> Paris </answer>", "no answer"], golden_answers=[["Paris"], ["Rome"]])
        [1.0, 0.0]
    """,
)
exact_match_reward = _answer_reward(
    exact_match,
    "exact_match_reward",
    """Strict exact match (SQuAD normalisation) of the last generated ``<answer>`` against ``golden_answers``.

    Example:
        >>> exact_match_reward(["<answer> The Paris </answer>"], golden_answers=[["Paris"]])
        [1.0]
    """,
)
cover_em_reward = _answer_reward(
    cover_exact_match,
    "cover_em_reward",
    """Cover EM: 1.0 if a normalised gold answer is contained in the last generated ``<answer>``.

    Example:
        >>> cover_em_reward(["<answer> in Paris, France </answer>"], golden_answers=[["Paris"]])
        [1.0]
    """,
)


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 for a completion that follows the tag protocol (see :func:`~zerosearch_trl.protocol.is_well_formed`);
    with the rollout's ``policy_turns``, the policy's own turns are checked, turn by turn.

    Example:
        >>> format_reward(["<think>x</think><answer> y </answer>", "y"])
        [1.0, 0.0]
    """
    return [float(is_well_formed(c if _is_turns(c) else completion_text(c))) for c in policy_texts(completions, kwargs)]


def _is_turns(completion: Any) -> bool:
    return isinstance(completion, (list, tuple)) and all(isinstance(turn, str) for turn in completion)
