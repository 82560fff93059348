"""The tag protocol between the policy and the search environment.

A policy turn is ``<think> ... </think>`` followed by exactly one action, either ``<search> query </search>``
or ``<answer> text </answer>``. The environment answers a search with ``<information> ... </information>``
holding numbered documents, and answers anything else with a short corrective observation, as in the paper.

Example:
    >>> from zerosearch_trl.protocol import parse_action
    >>> parse_action("<think>I need the capital.</think><search> capital of France </search>")
    Action(kind='search', content='capital of France', end=70)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from zerosearch_trl.engines.base import Document

THINK, SEARCH, ANSWER, INFORMATION = "think", "search", "answer", "information"
TAGS = (THINK, SEARCH, ANSWER, INFORMATION)

STOP_STRINGS = ("</search>", "</answer>", "<information>")
"""Generation stops after either closing tag (the environment acts on the first complete action), and at an
``<information>`` the policy starts writing itself: observations are the environment's to write."""

INVALID_ACTION_FEEDBACK = (
    "\nThat was not a valid action. To search, put the query inside the search tags. "
    "To finish, put the final answer inside the answer tags. Try again.\n"
)
"""Observation returned for a turn that holds no complete action (the paper's corrective message, reworded). It
names no tag literally: text the environment writes must never read as an answer of the policy's."""

OBSERVATION_OPEN, OBSERVATION_CLOSE = "\n\n<information>", "</information>\n\n"
"""What the environment writes around the documents of a search."""

_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_INFORMATION_BLOCK = re.compile(r"<information>.*?(?:</information>|$)", re.DOTALL)
_TAG = re.compile(r"<(/?)(think|search|answer|information)>")


@dataclass(frozen=True)
class Action:
    """One parsed policy action.

    Attributes:
        kind: ``"search"``, ``"answer"`` or ``"invalid"`` (no complete action, or an empty one).
        content: the stripped query or answer; empty for invalid actions.
        end: character offset just after the action's closing tag (0 for invalid actions); text after it
            was generated past the action and is not acted upon.

    Example:
        >>> parse_action("<answer> Paris </answer> and more")
        Action(kind='answer', content='Paris', end=24)
        >>> parse_action("Paris")
        Action(kind='invalid', content='', end=0)
    """

    kind: Literal["search", "answer", "invalid"]
    content: str
    end: int


def parse_action(text: str) -> Action:
    """Parse the first complete ``<search>`` or ``<answer>`` action of one generated turn.

    A nested opening tag (``<search> a <search> b </search>``) resolves to the innermost content; a missing
    closing tag (a truncated generation), empty content or content holding another protocol tag is invalid. Never
    raises.

    Args:
        text: the text the policy generated in this turn (never the prompt).

    Example:
        >>> parse_action("<answer> Paris </answer>").content
        'Paris'
    """
    match = _ACTION.search(text)
    if match is None:
        return Action("invalid", "", 0)
    kind, content = match.group(1), match.group(2)
    # For "<search> a <search> b </search>" the non-greedy match spans both openings: keep the innermost part.
    content = content.rsplit(f"<{kind}>", 1)[-1].strip()
    if not content or _TAG.search(content):  # empty, or holding another tag ("<answer><search></answer>")
        return Action("invalid", "", 0)
    return Action(kind, content, match.end())  # type: ignore[arg-type]


def strip_observations(text: str) -> str:
    """Remove ``<information>`` blocks (text the environment wrote, not the policy) from a completion."""
    return _INFORMATION_BLOCK.sub("", text)


def format_document(index: int, document: Document) -> str:
    """Render one document as ``Doc i (Title: ...) text`` (1-based ``index``)."""
    title = document.title.strip()
    text = " ".join(document.text.split())
    return f"Doc {index} (Title: {title}) {text}" if title else f"Doc {index} {text}"


def render_documents(documents: Sequence[Document]) -> str:
    """Documents as the policy reads them, ``Doc i (Title: t) text``, one per line (no ``<information>`` tags).

    Example:
        >>> from zerosearch_trl.engines.base import Document
        >>> render_documents([Document("Lyon", "Lyon is in France."), Document("", "A city.")])
        'Doc 1 (Title: Lyon) Lyon is in France.\\nDoc 2 A city.'
    """
    return "\n".join(format_document(i, document) for i, document in enumerate(documents, start=1))


def render_observation(documents: Sequence[Document]) -> str:
    """Render search results as the ``<information>`` block appended after a ``</search>``.

    Example:
        >>> from zerosearch_trl.engines.base import Document
        >>> render_observation([Document(title="Paris", text="Paris is the capital of France.")])
        '\\n\\n<information>Doc 1 (Title: Paris) Paris is the capital of France.</information>\\n\\n'
    """
    return f"{OBSERVATION_OPEN}{render_documents(documents)}{OBSERVATION_CLOSE}"


def is_well_formed(text: str | Sequence[str]) -> bool:
    """Whether a completion follows the protocol: ``(think? search information)* think? answer``.

    ``text`` is a whole transcript (observations included), or the policy's own turns, as the search rollout
    hands them to reward functions (``policy_turns``: the ``env_mask = 1`` spans, one string per turn). Turns are
    checked strictly: every turn but the last is ``think? search``, the last is ``think? answer``, and an
    ``<information>`` tag in the policy's own text (a fabricated observation) is never well formed.

    Rules: tags never nest; every ``<search>`` is followed by an ``<information>`` block; exactly one
    ``<answer>``, last; search and answer are not empty; only whitespace outside tags. A completion may begin
    inside a ``<think>`` opened by a prefill in the prompt (its text then starts with reasoning and a ``</think>``).
    Never raises.

    Example:
        >>> is_well_formed("<think>easy</think><answer>Paris</answer>")
        True
        >>> is_well_formed("Paris")
        False
        >>> is_well_formed([" I look.</think><search> Lyon </search>", "<think>ok</think><answer> France </answer>"])
        True
    """
    if not isinstance(text, str):
        turns = list(text)
        last = len(turns) - 1
        return bool(turns) and all(
            _is_well_formed_turn(turn, ANSWER if i == last else SEARCH, first=i == 0) for i, turn in enumerate(turns)
        )
    stripped = _open_prefilled_think(text.strip())
    # Tokenise into (tag, closing?) events, checking that the text between tags is whitespace where required.
    open_tag: str | None = None
    previous_action: str | None = None  # the last closed search/answer/information
    position = 0
    for match in _TAG.finditer(stripped):
        between = stripped[position : match.start()]
        position = match.end()
        closing, tag = match.group(1) == "/", match.group(2)
        if open_tag is None and between.strip():
            return False
        if not closing:
            if open_tag is not None or previous_action == ANSWER:
                return False
            if tag == INFORMATION and previous_action != SEARCH:
                return False
            if tag != INFORMATION and previous_action == SEARCH:
                return False
            open_tag = tag
        else:
            if open_tag != tag or (tag in (SEARCH, ANSWER) and not between.strip()):
                return False
            open_tag = None
            if tag != THINK:
                previous_action = tag
    return open_tag is None and previous_action == ANSWER and not stripped[position:].strip()


def _open_prefilled_think(text: str) -> str:
    """``text`` with the ``<think>`` that a prefill opened in the prompt, when it starts inside one."""
    first_close, first_open = text.find("</think>"), text.find("<think>")
    if first_close != -1 and (first_open == -1 or first_close < first_open):
        return "<think>" + text
    return text


def _is_well_formed_turn(turn: str, action: str, *, first: bool) -> bool:
    """One policy turn: ``think* action`` with nothing but whitespace outside the tags and no ``<information>``."""
    stripped = _open_prefilled_think(turn.strip()) if first else turn.strip()
    open_tag: str | None = None
    acted = False
    position = 0
    for match in _TAG.finditer(stripped):
        between = stripped[position : match.start()]
        position = match.end()
        closing, tag = match.group(1) == "/", match.group(2)
        if tag not in (THINK, action) or (open_tag is None and between.strip()):
            return False
        if not closing:
            if open_tag is not None or acted:
                return False
            open_tag = tag
        else:
            if open_tag != tag or (tag == action and not between.strip()):
                return False
            open_tag, acted = None, tag == action
    return open_tag is None and acted and not stripped[position:].strip()
