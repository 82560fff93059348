"""Prompt templates: the policy's search-agent instruction and the simulator's useful/noisy requests.

This module is the one source of truth for both: the simulator SFT data and the simulated engine build their
prompts here, so that a fine-tuned simulator sees at training time exactly what it was trained on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

PromptStyle = Literal["zero_shot", "one_shot"]

THINK_PREFILL = "<think>"
"""Text prefilled into the assistant turn so that small models start in the protocol."""

PROMPT_SETTINGS_FILE = "zerosearch_prompt.json"
"""Where a trained policy's folder records how it was prompted (:class:`PromptSettings`)."""

logger = logging.getLogger(__name__)

_RULES = (
    "Answer the question below. Each time you get new information, first reason about it between <think> and "
    "</think>. If you lack some knowledge, call the search engine by writing <search> your query </search>; "
    "its top results come back between <information> and </information>. You may search as many times as you "
    "need. When you need no more information, write the final answer between <answer> and </answer>, "
    "with no explanation, for example <answer> Beijing </answer>."
)

_SHORT_RULES = (
    "Answer the question. Think inside <think> </think>. To search, write <search> query </search>; results come "
    "back inside <information> </information>. Give the final answer inside <answer> </answer>."
)

_EXAMPLE = (
    "Example:\n"
    "Question: In which city was Mira Holtberg born?\n"
    "<think> I need to search for Mira Holtberg. </think>\n"
    "<search> Mira Holtberg </search>\n"
    "<information>Doc 1 (Title: Mira Holtberg) Mira Holtberg (born 1921) is a painter born in Lund.</information>\n"
    "<think> She was born in Lund. </think>\n"
    "<answer> Lund </answer>"
)

POLICY_TEMPLATES: dict[str, str] = {
    # The paper's instruction, in our own words; large instruct models (3B+) follow it zero-shot.
    "zero_shot": _RULES + "\nQuestion: {question}\n",
    # Small models need a short instruction and a worked example: with the embedded 135M model, the <think>
    # prefill and temperature 1, this one gave a well-formed <search> in 9 of 32 first turns, against 3 of 32
    # for the paper's instruction followed by the same example (`zerosearch-trl probe` measures it).
    "one_shot": _SHORT_RULES + "\n" + _EXAMPLE + "\nQuestion: {question}\n",
}


def build_policy_prompt(question: str, style: PromptStyle = "zero_shot") -> list[dict[str, str]]:
    """Chat messages asking the policy to answer ``question`` with the search protocol.

    Args:
        question: the question, as it appears in the dataset.
        style: ``"zero_shot"`` (the paper's instruction) or ``"one_shot"`` (adds a worked example; use it
            for small models such as the embedded 135M one).

    Example:
        >>> build_policy_prompt("Who wrote Dune?")[0]["role"]
        'user'
    """
    if style not in POLICY_TEMPLATES:
        raise ValueError(f"Unknown prompt style {style!r}; choose one of {sorted(POLICY_TEMPLATES)}.")
    return [{"role": "user", "content": POLICY_TEMPLATES[style].format(question=question.strip())}]


def render_policy_prompt(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    prefill: str | None = THINK_PREFILL,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> str:
    """Apply the chat template with a generation prompt, then append the assistant prefill (if any).

    The prefill belongs to the prompt: the policy's completion continues it. ``chat_template_kwargs`` reach the
    template (``GRPOConfig.chat_template_kwargs``, e.g. ``{"enable_thinking": False}``).

    Example:
        >>> text = render_policy_prompt(tokenizer, build_policy_prompt("Who wrote Dune?"))  # doctest: +SKIP
        >>> text.endswith("<think>")  # doctest: +SKIP
        True
    """
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )
    return text + (prefill or "")


@dataclass(frozen=True)
class PromptSettings:
    """How a policy was prompted in training, which evaluation and the probe must reproduce.

    The training job writes it next to the model (:data:`PROMPT_SETTINGS_FILE`, in the output folder and every
    checkpoint); :func:`~zerosearch_trl.load_model` attaches it to the loaded model's config, and ``eval``,
    ``probe``, ``collect-simulator-data`` and :func:`~zerosearch_trl.evaluate` use it unless told otherwise.

    Attributes:
        prompt_style: the policy instruction, ``"zero_shot"`` or ``"one_shot"``.
        prefill: the text that opened the assistant turn (``None``: none).
        protocol: the action protocol (``"tags"``: ``<search>``, ``<information>``, ``<answer>``).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = PromptSettings("one_shot").save(folder)
        >>> PromptSettings.read(folder)
        PromptSettings(prompt_style='one_shot', prefill='<think>', protocol='tags')
    """

    prompt_style: PromptStyle = "zero_shot"
    prefill: str | None = THINK_PREFILL
    protocol: str = "tags"

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write :data:`PROMPT_SETTINGS_FILE` into ``folder``; return its path."""
        path = Path(folder) / PROMPT_SETTINGS_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> PromptSettings | None:
        """The settings saved in ``folder``, or ``None`` when it has none (a bad file is named in a warning)."""
        path = Path(folder).expanduser() / PROMPT_SETTINGS_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            logger.warning("Ignoring %s, which does not describe a prompt (%s).", path, error)
            return None

    @classmethod
    def from_dict(cls, data: Any) -> PromptSettings:
        """Rebuild from :meth:`save`'s JSON (or a model config's ``zerosearch_prompt``); raise on a bad value."""
        if not isinstance(data, dict) or data.get("prompt_style") not in POLICY_TEMPLATES:
            raise ValueError(f"expected a prompt_style among {sorted(POLICY_TEMPLATES)}, got {data!r}")
        return cls(**{key: data[key] for key in ("prompt_style", "prefill", "protocol") if key in data})


@dataclass
class PromptArguments:
    """How to prompt the policy (``train``, ``eval``, ``probe``, ``collect-simulator-data``): each setting left unset
    is what the model was trained with (:class:`PromptSettings`), else the default for the model.

    Example:
        >>> PromptArguments().prompt_style is None  # decided per model
        True
    """

    prompt_style: str | None = field(
        default=None,
        metadata={
            "help": "Policy instruction: 'zero_shot' (the paper's) or 'one_shot' (a worked example, for small "
            "models); default: as the model was trained (its zerosearch_prompt.json), else one_shot for the "
            "embedded model and zero_shot for any other."
        },
    )
    prefill: str | None = field(
        default=None,
        metadata={
            "help": "Text that opens the assistant turn ('' for none); default: as the model was trained, else <think>."
        },
    )

    def __post_init__(self) -> None:  # every command that takes these fails here, before any model loads
        if self.prompt_style not in (None, *POLICY_TEMPLATES):
            raise ValueError(f"--prompt_style must be 'zero_shot' or 'one_shot', got {self.prompt_style!r}.")


SimulatorMode = Literal["useful", "noisy"]
SimulatorFormat = Literal["prompt_only", "finetuned", "zerosearch"]
SIMULATOR_FORMATS: tuple[str, ...] = ("prompt_only", "finetuned", "zerosearch")
"""``prompt_only``: an off-the-shelf instruct model; ``finetuned``: a simulator trained with
:mod:`zerosearch_trl.simulator.sft`; ``zerosearch``: the released ZeroSearch simulators (their exact input)."""

# The input the released ZeroSearch simulator checkpoints were fine-tuned on: ZeroSearch repository (commit 2d4cdca),
# llm_agent/generation.py, search_simulate_sft. An interface contract, reproduced character for character ("five"
# and "30 words" included, whatever top_k and words_per_doc say; the answer is cut at Doc top_k + 1 instead).
_ZEROSEARCH_PROMPT = (
    "You are the Google search engine.\n"
    "Given a query, you need to generate five {kind} documents for the query.\n\n"
    'The user is trying to answer the question: "{question}" whose answer is {answer}.\n'
    "Each document should contain about 30 words, and these documents should contain {kind} information.\n\n"
    "Query: {query}\n"
    "{Kind} Output:\n"
)

SIMULATOR_OUTPUT_FORMAT = "Doc {index} (Title: {title}) {text}"
"""One line per document in the simulator's output; the same rendering the policy sees in ``<information>``."""


def simulator_prefill(n_docs: int) -> str:
    """The assistant-turn prefix that starts the simulator's output in the expected format.

    Small models follow a format far more reliably when its first tokens are given: measured on the embedded
    135M model, a one-document request prefilled with ``(Title:`` parsed in 31 of 40 samples.
    """
    return "Doc 1 (Title:" if n_docs > 1 else "(Title:"


def simulator_messages(
    query: str,
    mode: SimulatorMode,
    *,
    question: str | None = None,
    golden_answers: Sequence[str] = (),
    n_docs: int = 5,
    words_per_doc: int = 30,
    prompt_format: SimulatorFormat = "prompt_only",
    prefill: bool = True,
) -> list[dict[str, str]]:
    """Chat messages asking a simulator LLM for ``n_docs`` useful or noisy search results for ``query``.

    The useful prompt gives the episode's question and gold answer, so that the documents help answer it (the
    paper's design). The noisy prompt asks for results that look relevant but do not help. With
    ``prompt_format="finetuned"`` both modes carry the question and answer, so that a simulator fine-tuned on
    this format learns what to avoid; a prompt-only simulator's noisy prompt leaves them out, because small
    models tend to copy an answer they are shown. With ``prefill`` the last message is an assistant turn
    holding :func:`simulator_prefill`, which the generation backends continue.

    ``prompt_format="zerosearch"`` is the input the released ZeroSearch simulators were fine-tuned on, exactly: an
    empty system message and one user message from the query, the question and the FIRST gold answer, with no
    prefill (``n_docs``, ``words_per_doc`` and ``prefill`` do not apply: the reference asks for five documents of
    about 30 words, and its caller cuts the answer at ``Doc {top_k + 1}``). The reference sends the user content
    as one text part, which an OpenAI-compatible server flattens to this same string.

    Example:
        >>> messages = simulator_messages("Lyon country", "useful", question="Where is Lyon?", golden_answers=["France"])
        >>> "France" in messages[0]["content"], messages[-1]
        (True, {'role': 'assistant', 'content': 'Doc 1 (Title:'})
    """
    if mode not in ("useful", "noisy"):
        raise ValueError(f"Simulator mode must be 'useful' or 'noisy', got {mode!r}.")
    if prompt_format not in SIMULATOR_FORMATS:
        raise ValueError(f"prompt_format must be one of {', '.join(SIMULATOR_FORMATS)}, got {prompt_format!r}.")
    if prompt_format == "zerosearch":
        content = _ZEROSEARCH_PROMPT.format(
            kind=mode,
            Kind=mode.capitalize(),
            question=question if question is not None else query,
            answer=golden_answers[0] if golden_answers else "",
            query=query,
        )
        return [{"role": "system", "content": ""}, {"role": "user", "content": content}]
    answer = " or ".join(f'"{a}"' for a in golden_answers)
    if n_docs == 1:
        lines = [
            f'You are a web search engine. Write one search result for the query "{query.strip()}": '
            f"its title in parentheses, then about {words_per_doc} words of text."
        ]
    else:
        lines = [
            f'You are a web search engine. Write the top {n_docs} results for the query "{query.strip()}", one per '
            f"line, each as: Doc N (Title: title) text, with about {words_per_doc} words of text."
        ]
    if question and (mode == "useful" or prompt_format == "finetuned"):
        lines.append(
            f'The user wants to answer the question "{question.strip()}"'
            + (f"; the answer is {answer}." if answer else ".")
        )
    if mode == "useful":
        lines.append("The results must be useful: they state the facts that answer the question.")
    else:
        lines.append("The results must be noisy: about the query, but without the answer or any fact that leads to it.")
    messages = [{"role": "user", "content": "\n".join(lines)}]
    if prefill:
        messages.append({"role": "assistant", "content": simulator_prefill(n_docs)})
    return messages
