"""Scores that only the policy's own answer can earn (#20): no free match for a gold that normalises to nothing."""

import logging

import datasets
import pytest

from zerosearch_trl.answers import cover_exact_match, exact_match, f1_score
from zerosearch_trl.data import load_qa_dataset
from zerosearch_trl.rewards import cover_em_reward, exact_match_reward, f1_reward


@pytest.mark.parametrize("prediction", ["", "-", "a", "the", "!!"])
@pytest.mark.parametrize("metric", [exact_match, f1_score, cover_exact_match])
def test_a_gold_that_normalises_to_nothing_matches_nothing(metric, prediction):
    assert metric(prediction, ["---"]) == 0.0
    assert metric(prediction, ["---", "Paris"]) == 0.0


def test_an_empty_gold_does_not_hide_a_real_one():
    assert exact_match("Paris", ["---", "Paris"]) == 1.0
    assert f1_score("Paris", ["", "Paris"]) == 1.0


@pytest.mark.parametrize("reward", [f1_reward, exact_match_reward, cover_em_reward])
def test_answer_rewards_pay_nothing_against_an_empty_gold(reward):
    completions = ["<answer></answer>", "<answer>-</answer>", "<answer>a</answer>"]
    assert reward(completions, golden_answers=[["---"]] * 3) == [0.0, 0.0, 0.0]


def test_the_loader_warns_once_about_golds_that_normalise_to_nothing(caplog):
    rows = datasets.Dataset.from_list(
        [
            {"question": "q1", "golden_answers": ["---"]},
            {"question": "q2", "golden_answers": ["Paris", "!"]},
            {"question": "q3", "golden_answers": ["Rome"]},
        ]
    )
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.data"):
        loaded = load_qa_dataset(rows)
    warnings = [r.getMessage() for r in caplog.records if r.name == "zerosearch_trl.data"]
    assert len(warnings) == 1
    assert "2 of 3 rows" in warnings[0] and "'---'" in warnings[0] and "q1" in warnings[0]
    assert list(loaded["golden_answers"]) == [["---"], ["Paris", "!"], ["Rome"]]  # kept: they still score 0
