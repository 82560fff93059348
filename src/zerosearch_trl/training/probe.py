"""The probe: sample a policy's first turn and count the protocol actions it takes (``zerosearch-trl probe``).

It tells whether a policy writes the tags at all before RL (a policy that never searches earns no reward), and
whether a warm start (:mod:`~zerosearch_trl.training.warmstart`) worked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from zerosearch_trl.generation.base import GenerationParams
from zerosearch_trl.prompts import THINK_PREFILL, PromptStyle, build_policy_prompt, render_policy_prompt
from zerosearch_trl.protocol import STOP_STRINGS, parse_action


def well_formed_search_share(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    n: int | None = None,
    prompt_style: PromptStyle = "one_shot",
    prefill: str | None = THINK_PREFILL,
    params: GenerationParams | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Sample the policy's first turn on ``questions`` and count the actions it takes (``zerosearch-trl probe``).

    Each turn is generated from the rollout's prompt and prefill, stops at ``</search>``, ``</answer>`` or EOS,
    and is parsed with :func:`~zerosearch_trl.protocol.parse_action`: ``"search"`` and ``"answer"`` are complete,
    non-empty actions, anything else is ``"invalid"``.

    Args:
        model: the policy.
        tokenizer: its tokenizer.
        questions: questions to ask; repeated in order up to ``n`` samples.
        n: number of samples (default: one per question).
        prompt_style: policy instruction style.
        prefill: assistant prefill, as in the rollout.
        params: sampling parameters (default: temperature 1, top-p 0.95, 128 new tokens, seed 0, as in GRPO);
            the stop strings are always the protocol's.
        batch_size: prompts per ``generate`` call.

    Returns:
        ``{"counts": {...}, "shares": {...}, "samples": [...]}`` over ``"search"``, ``"answer"`` and ``"invalid"``;
        ``shares["search"]`` is the share of well-formed searches.

    Example:
        >>> report = well_formed_search_share(model, tokenizer, ["Who wrote Dune?"], n=8)  # doctest: +SKIP
        >>> report["shares"]["search"]  # doctest: +SKIP
        0.25
    """
    from zerosearch_trl.generation.transformers import TransformersGenerator

    if isinstance(questions, str) or not questions:
        raise ValueError(f"questions must be a non-empty list of questions, got {questions!r}.")
    n = len(questions) if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}.")
    params = replace(
        params or GenerationParams(max_new_tokens=128, temperature=1.0, top_p=0.95, seed=0), stop=STOP_STRINGS
    )
    asked = [questions[i % len(questions)] for i in range(n)]
    prompts = [render_policy_prompt(tokenizer, build_policy_prompt(q, prompt_style), prefill) for q in asked]
    generations = TransformersGenerator(model, tokenizer, batch_size=batch_size).generate(prompts, params)
    actions = [parse_action(g.text) for g in generations]
    kinds = ("search", "answer", "invalid")
    counts = {k: sum(a.kind == k for a in actions) for k in kinds}
    return {
        "counts": counts,
        "shares": {k: counts[k] / n for k in kinds},
        "samples": [
            {"question": q, "generated": g.text, "action": a.kind, "content": a.content}
            for q, g, a in zip(asked, generations, actions)
        ],
    }
