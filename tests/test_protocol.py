import pytest
from hypothesis import given
from hypothesis import strategies as st

from zerosearch_trl.engines.base import Document
from zerosearch_trl.protocol import (
    INVALID_ACTION_FEEDBACK,
    is_well_formed,
    parse_action,
    render_observation,
    strip_observations,
)


@pytest.mark.parametrize(
    ("text", "kind", "content"),
    [
        # Real-looking outputs of the embedded model with the one-shot prompt.
        (" I do not know where Ostrava is. </think>\n<search> Ostrava country </search>", "search", "Ostrava country"),
        ("<think>I know it.</think>\n<answer> Czech Republic </answer>", "answer", "Czech Republic"),
        ("<search>first query</search> and then <search>second</search>", "search", "first query"),
        ("<answer> a </answer><search> b </search>", "answer", "a"),
        ("<search> who founded <b>Acme</b> </search>", "search", "who founded <b>Acme</b>"),
        # Nested opening tag: the innermost query counts.
        ("<search> draft <search> real query </search>", "search", "real query"),
        # Truncated generation: no closing tag.
        ("<think> I will search </think><search> capital of Fr", "invalid", ""),
        ("<search>   </search>", "invalid", ""),
        ("<answer></answer>", "invalid", ""),
        ("The answer is Paris.", "invalid", ""),
        ("</search> Paris <search>", "invalid", ""),
        ("", "invalid", ""),
        ("<SEARCH> upper </SEARCH>", "invalid", ""),
        ("<search>multi\nline\nquery</search>", "search", "multi\nline\nquery"),
    ],
)
def test_parse_action(text, kind, content):
    action = parse_action(text)
    assert (action.kind, action.content) == (kind, content)


def test_parse_action_end_points_after_closing_tag():
    text = "<think>x</think><search> q </search> trailing text the model kept writing"
    action = parse_action(text)
    assert text[: action.end].endswith("</search>")
    assert text[action.end :] == " trailing text the model kept writing"


def test_render_observation_numbers_documents():
    docs = [Document(title="Lyon", text="Lyon is  in\nFrance."), Document(title="", text="No title here.")]
    rendered = render_observation(docs)
    assert rendered == "\n\n<information>Doc 1 (Title: Lyon) Lyon is in France.\nDoc 2 No title here.</information>\n\n"
    assert strip_observations("<search>q</search>" + rendered + "<answer>x</answer>").replace("\n", "") == (
        "<search>q</search><answer>x</answer>"
    )


def test_invalid_feedback_names_both_actions():
    # In words, not as literal tags: a tag in the environment's text could be read as the policy's answer (#20).
    assert "search tags" in INVALID_ACTION_FEEDBACK and "answer tags" in INVALID_ACTION_FEEDBACK


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<think>x</think><answer>y</answer>", True),
        ("<answer>y</answer>", True),
        (
            "  <think>a</think>\n<search>q</search>\n\n<information>Doc 1 x</information>\n\n<think>b</think><answer>y</answer>\n",
            True,
        ),
        (
            "<search>q1</search><information>d</information><search>q2</search><information>d</information><answer>y</answer>",
            True,
        ),
        # Continues a <think> prefilled in the prompt.
        (" reasoning </think>\n<search> q </search><information>d</information><answer> y </answer>", True),
        (" reasoning </think><answer>y</answer>", True),
        ("<think>x</think>", False),  # no answer
        ("<answer>y</answer><answer>z</answer>", False),  # two answers
        ("<answer>y</answer> and some chatter", False),
        ("chatter <answer>y</answer>", False),
        ("<search>q</search><answer>y</answer>", False),  # search without information
        ("<information>d</information><answer>y</answer>", False),  # information without search
        ("<think><search>q</search></think><answer>y</answer>", False),  # nesting
        ("<answer>y", False),
        ("<answer> </answer>", False),
        ("<search></search><information>d</information><answer>y</answer>", False),
        ("<think>a</think><think>b</think><answer>y</answer>", True),
        ("", False),
    ],
)
def test_is_well_formed(text, ok):
    assert is_well_formed(text) is ok


_PIECES = list("ab <>/\n") + [f"<{c}{t}>" for t in ("search", "answer", "think", "information") for c in ("", "/")]


@given(st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))
def test_parsers_never_raise(text):
    action = parse_action(text)
    assert action.kind in ("search", "answer", "invalid")
    assert isinstance(is_well_formed(text), bool)
    assert isinstance(strip_observations(text), str)
