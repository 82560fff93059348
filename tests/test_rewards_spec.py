"""Black-box tests of the answer-scoring functions, written from the specification alone.

Every expected value below was computed by hand from the spec (SQuAD normalisation, token-level F1
with the HotpotQA yes/no/noanswer rule, exact match, whole-word cover match, the TRL reward-function
signature and the well-formed-completion grammar of ``format_reward``).
"""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import zerosearch_trl
from zerosearch_trl.answers import cover_exact_match, exact_match, f1_score, normalize_answer
from zerosearch_trl.rewards import cover_em_reward, exact_match_reward, extract_answer, f1_reward, format_reward

METRIC_OF_REWARD = {
    f1_reward: f1_score,
    exact_match_reward: exact_match,
    cover_em_reward: cover_exact_match,
}
REWARDS = [f1_reward, exact_match_reward, cover_em_reward]
ALL_REWARDS = [*REWARDS, format_reward]


def _assistant(text):
    return [{"role": "assistant", "content": text}]


# --------------------------------------------------------------------------------------------------
# re-exports
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "normalize_answer",
        "extract_answer",
        "f1_score",
        "exact_match",
        "cover_exact_match",
        "f1_reward",
        "exact_match_reward",
        "cover_em_reward",
        "format_reward",
    ],
)
def test_reexported_from_package(name):
    assert getattr(zerosearch_trl, name) is getattr(zerosearch_trl.rewards, name)


# --------------------------------------------------------------------------------------------------
# normalize_answer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "paris"),
        ("The Eiffel-Tower!", "eiffeltower"),  # punctuation deleted, no space inserted
        ("  A  cat   and AN apple  ", "cat and apple"),  # articles removed, whitespace collapsed
        ("theater", "theater"),  # "the" only as a whole word
        ("Anthem of a nation", "anthem of nation"),
        ("Obama's", "obamas"),
        ("U.S.A.", "usa"),
        ("the-end", "theend"),  # punctuation removed before articles
        ("a\tb\nc", "b c"),  # tab/newline are whitespace; "a" is an article
        ("Hello,   World", "hello world"),
        ("The", ""),
        ("", ""),
        ("   ", ""),
        ("$1,000.50", "100050"),
        ("(New) [York] {City}", "new york city"),
        ("Café", "café"),  # non-ASCII letters kept, lower-cased
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


# --------------------------------------------------------------------------------------------------
# extract_answer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>Paris</answer>", "Paris"),
        ("<answer>  Paris  </answer>", "Paris"),
        ("<answer>\nNew York City\n</answer>", "New York City"),
        ("<think>easy</think><answer>Paris</answer>", "Paris"),
        ("no tags at all", None),
        ("", None),
        ("<answer>Paris", None),  # not complete
        ("Paris</answer>", None),
        ("<answer>first</answer> text <answer>second</answer>", "second"),  # last one
        ("<answer>first</answer><answer>second", "first"),  # last COMPLETE one
        ("<information><answer>fake</answer></information>", None),  # search engine text ignored
        (
            "<search>q</search><information>Doc 1: <answer>fake</answer></information><answer>real</answer>",
            "real",
        ),
        (
            "<answer>real</answer><search>q</search><information><answer>fake</answer></information>",
            "real",
        ),
        (
            "<search>q</search><information>a <answer>x</answer> b</information>"
            "<search>q2</search><information><answer>y</answer></information>",
            None,
        ),
        ("<answer></answer>", ""),  # a complete (empty) answer block: stripped content is ""
    ],
)
def test_extract_answer_text(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (_assistant("<answer>Paris</answer>"), "Paris"),
        (
            [
                {"role": "user", "content": "<answer>from user</answer>"},
                {"role": "assistant", "content": "<answer>from model</answer>"},
            ],
            "from model",
        ),
        ([{"role": "user", "content": "<answer>from user</answer>"}], None),
        ([{"role": "system", "content": "<answer>sys</answer>"}], None),
        ([{"role": "assistant", "content": [{"type": "text", "text": "<answer>z</answer>"}]}], "z"),
        (
            [
                {"role": "assistant", "content": "<answer>a1</answer>"},
                {"role": "assistant", "content": "more <answer>a2</answer>"},
            ],
            "a2",
        ),
        (
            [
                {"role": "assistant", "content": "<answer>mine</answer><search>q</search>"},
                {"role": "user", "content": "<information><answer>fake</answer></information>"},
            ],
            "mine",
        ),
        (
            [
                {"role": "assistant", "content": "<search>q</search>"},
                {"role": "tool", "content": "<answer>tool said</answer>"},
            ],
            None,
        ),
        # assistant messages are joined with newlines, so a tag may span two of them
        (
            [
                {"role": "assistant", "content": "<answer>Par"},
                {"role": "assistant", "content": "is</answer>"},
            ],
            "Par\nis",
        ),
        ([], None),
    ],
)
def test_extract_answer_messages(messages, expected):
    assert extract_answer(messages) == expected


# --------------------------------------------------------------------------------------------------
# f1_score
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("barack obama", "obama", 2 / 3),  # P=1/2 R=1
        ("barack obama", ["obama"], 2 / 3),
        ("The Big Apple", "big apple pie", 4 / 5),  # "big apple" vs "big apple pie": P=1 R=2/3
        ("new york city", ["york", "new york"], 4 / 5),  # max(1/2, 4/5)
        ("x y z w", "x y q", 4 / 7),  # P=2/4 R=2/3
        ("paris paris", "paris", 2 / 3),  # multiset overlap = 1
        ("paris paris", "paris paris london", 4 / 5),
        ("The Beatles!", "beatles", 1.0),
        ("london", "paris", 0.0),
        ("", "paris", 0.0),
        (None, "paris", 0.0),
        (None, ["paris", "london"], 0.0),
        ("Eiffel-Tower", "eiffel tower", 0.0),  # "eiffeltower" shares no token
        # HotpotQA yes/no/noanswer rule
        ("yes", "no", 0.0),
        ("yes", "yes", 1.0),
        ("Yes.", "yes", 1.0),
        ("yes it is", "yes", 0.0),  # would be 1/2 without the rule
        ("no", "no way", 0.0),  # would be 2/3 without the rule
        ("noanswer", "no answer", 0.0),
        ("no, paris", ["no", "paris"], 2 / 3),  # rule per gold: 0 vs "no", 2/3 vs "paris"
        ("paris", ["yes", "paris"], 1.0),
    ],
)
def test_f1_score(prediction, golds, expected):
    assert f1_score(prediction, golds) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------------
# exact_match
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("The Paris.", "paris", 1.0),
        ("paris", ["PARIS"], 1.0),
        ("paris france", "paris", 0.0),
        ("Lennon", ["McCartney", "lennon"], 1.0),
        ("Ringo", ["McCartney", "lennon"], 0.0),
        ("eiffel tower", "Eiffel-Tower", 0.0),  # "eiffel tower" != "eiffeltower"
        ("Eiffel  Tower", "eiffel tower", 1.0),
        (None, "paris", 0.0),
        (None, ["paris"], 0.0),
    ],
)
def test_exact_match(prediction, golds, expected):
    assert exact_match(prediction, golds) == expected


# --------------------------------------------------------------------------------------------------
# cover_exact_match
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("the beatles band", "The Beatles", 1.0),
        ("parisian", "paris", 0.0),
        ("I think it is New York City.", "new york", 1.0),
        ("york new", "new york", 0.0),
        ("newyork", "new york", 0.0),
        ("new yorker", "new york", 0.0),
        ("rome", "rome", 1.0),
        ("it is paris", ["london", "paris"], 1.0),
        ("it is rome", ["london", "paris"], 0.0),
        ("paris", ["", "the"], 0.0),  # empty normalised golds never match
        (None, "paris", 0.0),
    ],
)
def test_cover_exact_match(prediction, golds, expected):
    assert cover_exact_match(prediction, golds) == expected


# --------------------------------------------------------------------------------------------------
# reward functions (TRL signature)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reward", "completions", "kwargs", "expected"),
    [
        (f1_reward, ["<answer>barack obama</answer>"], {"golden_answers": ["obama"]}, [2 / 3]),
        (f1_reward, ["<answer>barack obama</answer>"], {"golden_answers": [["x", "barack obama"]]}, [1.0]),
        (f1_reward, ["<answer>Paris</answer>"], {"answer": ["paris"]}, [1.0]),  # fallback column
        (f1_reward, ["<answer>Paris</answer>"], {"golden_answers": None, "answer": ["paris"]}, [1.0]),
        (f1_reward, ["<answer>Paris</answer>"], {"golden_answers": ["paris"], "answer": ["london"]}, [1.0]),
        (f1_reward, ["<answer>London</answer>"], {"golden_answers": ["paris"], "answer": ["london"]}, [0.0]),
        (f1_reward, ["I don't know"], {"golden_answers": ["paris"]}, [0.0]),
        (
            f1_reward,
            ["<answer>paris</answer>", "<answer>rome</answer>", "nothing", "<answer>paris city</answer>"],
            {"golden_answers": ["paris", "paris", "paris", ["x", "paris"]]},
            [1.0, 0.0, 0.0, 2 / 3],
        ),
        (
            f1_reward,
            ["<search>q</search><information><answer>paris</answer></information>"],
            {"golden_answers": ["paris"]},
            [0.0],
        ),
        (
            f1_reward,
            ["<answer>london</answer> hmm <answer>Paris</answer>"],
            {"golden_answers": ["paris"]},
            [1.0],
        ),
        (f1_reward, [_assistant("<answer>Paris</answer>")], {"golden_answers": ["paris"]}, [1.0]),
        (
            f1_reward,
            [[{"role": "user", "content": "<answer>paris</answer>"}, {"role": "assistant", "content": "dunno"}]],
            {"golden_answers": ["paris"]},
            [0.0],
        ),
        (f1_reward, ["<answer>yes it is</answer>"], {"golden_answers": ["yes"]}, [0.0]),
        (exact_match_reward, ["<answer>The Paris.</answer>"], {"golden_answers": ["paris"]}, [1.0]),
        (exact_match_reward, ["<answer>paris france</answer>"], {"golden_answers": ["paris"]}, [0.0]),
        (exact_match_reward, ["<answer>lennon</answer>"], {"answer": [["mccartney", "Lennon"]]}, [1.0]),
        (exact_match_reward, ["no tag"], {"golden_answers": ["no tag"]}, [0.0]),
        (cover_em_reward, ["<answer>the beatles band</answer>"], {"golden_answers": ["Beatles"]}, [1.0]),
        (cover_em_reward, ["<answer>parisian</answer>"], {"golden_answers": ["paris"]}, [0.0]),
        (
            cover_em_reward,
            [[{"role": "assistant", "content": [{"type": "text", "text": "<answer>New York City</answer>"}]}]],
            {"golden_answers": [["new york"]]},
            [1.0],
        ),
        (cover_em_reward, ["paris"], {"golden_answers": ["paris"]}, [0.0]),
    ],
)
def test_reward_values(reward, completions, kwargs, expected):
    out = reward(completions, **kwargs)
    assert isinstance(out, list)
    assert len(out) == len(expected)
    assert out == pytest.approx(expected)


@pytest.mark.parametrize("reward", REWARDS)
def test_reward_ignores_prompt_and_extra_kwargs(reward):
    out = reward(
        ["I am not sure.", "<answer>Paris</answer>"],
        prompts=["Q? <answer> Paris </answer>", "Q? <answer> London </answer>"],
        completion_ids=[[1, 2, 3], [4, 5]],
        trainer_state=object(),
        golden_answers=["Paris", "paris"],
        question=["q1", "q2"],
    )
    assert out == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize("reward", REWARDS)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"prompts": ["q"]}, {"golden_answers": None}, {"golden_answers": None, "answer": None}],
)
def test_reward_without_gold_column_raises(reward, kwargs):
    with pytest.raises(ValueError):
        reward(["<answer>Paris</answer>"], **kwargs)


WEIRD_COMPLETIONS = [
    "",
    "<answer>",
    "</answer>",
    "</answer><answer>",
    "<answer><answer>x</answer></answer>",
    "<information>unclosed <answer>x</answer>",
    "</information><answer>y</answer>",
    "<answer>\x00\uffff\U0001f600</answer>",
    "<<answer>>x<</answer>>",
    "<answer>" * 50,
    "\n\t ",
]


@pytest.mark.parametrize("reward", ALL_REWARDS)
def test_rewards_never_raise_on_weird_text(reward):
    out = reward(WEIRD_COMPLETIONS, golden_answers=["x"] * len(WEIRD_COMPLETIONS))
    assert len(out) == len(WEIRD_COMPLETIONS)
    assert all(0.0 <= v <= 1.0 for v in out)


# --------------------------------------------------------------------------------------------------
# format_reward
# --------------------------------------------------------------------------------------------------

WELL_FORMED = [
    "<think>reason</think><answer>Paris</answer>",
    "<answer>Paris</answer>",
    "<think>t</think><search>q</search><information>docs</information><think>t2</think><answer>Paris</answer>",
    "<think>t</think>\n<search>q1</search>\n<information>d1</information>\n"
    "<search>q2</search>\n<information>d2</information>\n<answer>x</answer>\n",
    "<search>q</search><information>d</information><answer>a</answer>",
    "<search>q</search>  \n <information>d</information><answer>a</answer>",
    "  <think>a</think>  <answer>b</answer>  ",
    "<think>a</think><search>q</search><information>d</information>"
    "<think>b</think><search>q2</search><information>d2</information><think>c</think><answer>x</answer>",
    # the completion may start inside a <think> opened by the prompt
    "I should search.</think><search>x</search><information>d</information><answer>y</answer>",
    "I know this.</think>\n<answer>y</answer>",
    "<think>t</think><answer>multi\nline answer</answer>",
]

ILL_FORMED = [
    "",
    "Paris",
    "<think>t</think>",  # no answer
    "<answer>a</answer><answer>b</answer>",  # two answers
    "<answer>a</answer> trailing text",
    "<answer></answer>",  # empty answer
    "<search></search><information>d</information><answer>a</answer>",  # empty search
    "<search>q</search><answer>a</answer>",  # search without information
    "<search>q</search>text<information>d</information><answer>a</answer>",
    "<think>a <think>b</think> c</think><answer>x</answer>",  # nested think
    "<answer>x</answer><think>t</think>",  # answer not last
    "hello <answer>x</answer>",  # text outside tags
    "<think>t</think> stray <answer>x</answer>",
    "<information>d</information><answer>x</answer>",  # information without search
    "<answer>x",
    "<think>t<answer>x</answer></think>",  # answer nested in think
    "<search>q</search><information>d</information>",  # no answer
    "<answer>a <search>q</search></answer>",  # search nested in answer
    "<search>q</search><information>d</information><search>q2</search><answer>x</answer>",
    "I should search.<search>x</search><information>d</information><answer>y</answer>",
    "<think>a</think><information>d</information><search>q</search><information>e</information><answer>x</answer>",
    "<search>q</search><information>d <search>q2</search></information><answer>x</answer>",
    "<search>q</search><information>d</information> oops <answer>x</answer>",
]


@pytest.mark.parametrize("completion", WELL_FORMED)
def test_format_reward_well_formed(completion):
    assert format_reward([completion]) == [1.0]


@pytest.mark.parametrize("completion", ILL_FORMED)
def test_format_reward_ill_formed(completion):
    assert format_reward([completion]) == [0.0]


def test_format_reward_batch_conversational_and_kwargs():
    out = format_reward(
        [
            "<think>t</think><answer>x</answer>",
            "just text",
            _assistant("<think>t</think><answer>x</answer>"),
        ],
        prompts=["p1", "p2", "p3"],
        completion_ids=[[1], [2], [3]],
        trainer_state=None,
        golden_answers=["x", "y", "z"],
    )
    assert out == [1.0, 0.0, 1.0]


def test_format_reward_needs_no_gold_column():
    assert format_reward(["<answer>x</answer>"]) == [1.0]


# --------------------------------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------------------------------

TAGS = [
    "<answer>",
    "</answer>",
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<information>",
    "</information>",
    " ",
    "\n",
    "yes",
    "no",
    "the",
]
tagged_text = st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=12)), max_size=12).map("".join)
gold_cell = st.one_of(st.text(max_size=20), st.lists(st.text(max_size=20), max_size=4))
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["assistant", "user", "system", "tool"]),
        "content": st.one_of(
            tagged_text,
            st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": tagged_text}), max_size=3),
        ),
    }
)
completion_st = st.one_of(tagged_text, st.lists(message, max_size=4))
ascii_words = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " \t\n", max_size=30)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(FAST, max_examples=60)
@given(st.lists(st.tuples(completion_st, gold_cell), min_size=1, max_size=4))
def test_property_rewards_total_and_bounded(batch):
    completions = [c for c, _ in batch]
    golds = [g for _, g in batch]
    for reward in ALL_REWARDS:
        out = reward(completions, golden_answers=golds, prompts=["p"] * len(batch))
        assert len(out) == len(batch)
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out)


@FAST
@given(completion_st, gold_cell)
def test_property_reward_is_metric_of_extracted_answer(completion, gold):
    extracted = extract_answer(completion)
    assert extracted is None or isinstance(extracted, str)
    for reward, metric in METRIC_OF_REWARD.items():
        expected = 0.0 if extracted is None else metric(extracted, gold)
        assert reward([completion], golden_answers=[gold]) == pytest.approx([expected])
        assert reward([completion], answer=[gold]) == pytest.approx([expected])


@FAST
@given(st.one_of(st.none(), st.text(max_size=30)), gold_cell)
def test_property_metrics_bounded(prediction, golds):
    for metric in (f1_score, exact_match, cover_exact_match):
        v = metric(prediction, golds)
        assert 0.0 <= v <= 1.0
        if prediction is None:
            assert v == 0.0


@FAST
@given(st.text(max_size=30), st.lists(st.text(max_size=20), min_size=1, max_size=4))
def test_property_max_over_golds(prediction, golds):
    for metric in (f1_score, exact_match, cover_exact_match):
        assert metric(prediction, golds) == pytest.approx(max(metric(prediction, g) for g in golds))


@FAST
@given(st.text(max_size=30), st.text(max_size=30))
def test_property_exact_match_implies_f1_and_cover(prediction, gold):
    assume(normalize_answer(gold) != "")
    if exact_match(prediction, gold) == 1.0:
        assert f1_score(prediction, gold) == pytest.approx(1.0)
        assert cover_exact_match(prediction, gold) == 1.0


@FAST
@given(st.text(max_size=30))
def test_property_self_match(text):
    assume(normalize_answer(text) != "")
    assert exact_match(text, text) == 1.0
    assert f1_score(text, text) == pytest.approx(1.0)
    assert cover_exact_match(text, text) == 1.0


@FAST
@given(st.text(max_size=30), st.text(max_size=30))
def test_property_f1_symmetric(a, b):
    assert f1_score(a, b) == pytest.approx(f1_score(b, a))
    assert exact_match(a, b) == exact_match(b, a)


@FAST
@given(ascii_words, ascii_words, ascii_words)
def test_property_cover_of_embedded_gold(left, gold, right):
    assume(normalize_answer(gold) != "")
    assert cover_exact_match(f"{left} {gold} {right}", gold) == 1.0


@FAST
@given(ascii_words)
def test_property_normalize_ascii_shape(text):
    out = normalize_answer(text)
    assert out == normalize_answer(out)  # idempotent
    assert out == out.strip()
    assert "  " not in out
    assert not any(ch in string.punctuation for ch in out)
    assert not any(ch.isupper() for ch in out)
    assert not ({"a", "an", "the"} & set(out.split()))
    assert not any(ch in "\t\n" for ch in out)


@FAST
@given(tagged_text)
def test_property_extract_answer_ignores_information_blocks(text):
    # with no answer of its own, an answer only inside a closed information block is never extracted
    assume(not any(tag in text for tag in ("<answer>", "</answer>", "<information>", "</information>")))
    assert extract_answer(text) is None
    assert extract_answer(text + "<search>q</search><information><answer>zzz</answer></information>") is None
    assert extract_answer(text + "<information><answer>zzz</answer></information><answer>ok</answer>") == "ok"
