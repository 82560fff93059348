"""Simulator text -> documents: the lenient parsing of what a simulator LLM writes.

Simulators, above all small prompt-only ones, number and title their results in many ways; the parser accepts the
common ones and drops what holds no text, so that the engine can retry or fall back instead of serving garbage.
"""

from __future__ import annotations

import re

from zerosearch_trl.engines.base import Document

# A document starts at "Doc 3", "Document 3", "[3]" or "3." at the beginning of a line.
_DOC_START = re.compile(
    r"^\s*(?:\*\*)?(?:(?:Doc(?:ument)?|Result)\s*#?\s*(\d+)|\[(\d+)\]|(\d+)[.)])\s*(?:\*\*)?\s*[:.\-]?\s*",
    re.IGNORECASE | re.MULTILINE,
)
# A title may hold one level of parentheses, as Wikipedia's do: "(Title: Mercury (planet)) text".
_TITLE = re.compile(r"^\(?\s*Title:\s*((?:[^()]|\([^()]*\))*?)\s*\)\s*", re.IGNORECASE)


def parse_documents(text: str, max_words: int | None = None) -> list[Document]:
    """Parse simulator output into documents, leniently.

    Accepts ``Doc N (Title: t) text`` (our format), ``Doc N: text``, ``Document N``, ``[N]`` and ``N.`` numbering,
    or one unnumbered ``(Title: t) text``; drops documents with empty text; truncates each text to ``max_words``
    words.

    Example:
        >>> [d.title for d in parse_documents("Doc 1 (Title: Lyon) A city.\\nDoc 2: Another text.")]
        ['Lyon', '']
    """
    starts = list(_DOC_START.finditer(text))
    if not starts and _TITLE.match(text.lstrip()):  # a single unnumbered "(Title: t) text" result
        starts = [re.match(r"\s*", text)]
    documents = []
    for match, following in zip(starts, starts[1:] + [None]):
        body = text[match.end() : following.start() if following else len(text)].strip()
        title = ""
        title_match = _TITLE.match(body)
        if title_match:
            title, body = title_match.group(1).strip(), body[title_match.end() :]
        elif body.lower().startswith(("(title:", "title:")):
            continue  # an unclosed title: a truncated or garbled result
        words = body.split()
        if max_words is not None:
            words = words[:max_words]
        if words:
            documents.append(Document(title=title, text=" ".join(words)))
    return documents


def first_result(text: str) -> str:
    """The first result of a one-document generation: its text up to the first blank line after a body.

    A blank line straight after the title is a paragraph break, not the end (small models often write one); a
    blank line after the body is where a model that runs on starts writing more results, which are cut off.

    Example:
        >>> first_result("(Title: Lyon)\\n\\nA city in France.\\n\\nMore results:\\n1. Paris")
        '(Title: Lyon)\\n\\nA city in France.'
    """
    for blank in re.finditer(r"\n\s*\n", text):
        if parse_documents(text[: blank.start()]):
            return text[: blank.start()]
    return text
