"""Episodes that may finish (#20, item 4): a budget per turn, per observation, and in all, checked with numbers.

The policy is the scripted one of ``test_rollout`` (real rollout, tokenizer and HF generation path).
"""

from __future__ import annotations

import logging

import pytest
from trl import ModelConfig

from helpers import make_tiny_model
from test_rollout import make_trainer, qa_dataset, scripted_generate, split_by_mask
from zerosearch_trl.engines.base import Document
from zerosearch_trl.rollout import make_search_rollout
from zerosearch_trl.rollout.episode import episode_budget
from zerosearch_trl.training.config import (
    CPU_DEFAULTS,
    CurriculumArguments,
    EngineArguments,
    JobArguments,
    SearchScriptArguments,
    SearchTrainingConfig,
    check_config,
)


class LongResults:
    """A real-engine stand-in whose five passages run to hundreds of tokens, as Wikipedia's do."""

    name, top_k = "long", 5

    def search(self, requests):
        text = " ".join(f"word{i}" for i in range(150))
        return [[Document(f"Title {k}", text) for k in range(5)] for _ in requests]


@pytest.fixture
def policy(tokenizer):
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    return model


def run(policy, tokenizer, questions, engine, max_completion_length, **budgets):
    dataset = qa_dataset(questions)
    rollout = make_search_rollout(engine, max_turns=2, **budgets)
    trainer = make_trainer(policy, tokenizer, dataset, rollout, max_completion_length)
    policy.train()
    return rollout(list(dataset["prompt"]), trainer), trainer


def test_the_paper_budget_is_two_searches_and_an_answer():
    assert episode_budget(max_turns=2, max_turn_tokens=500, max_observation_tokens=500) == 2501


def test_two_long_searches_leave_room_for_the_answer(policy, tokenizer):
    budgets = {"max_turn_tokens": 64, "max_observation_tokens": 96}
    length = episode_budget(2, **budgets)
    out, trainer = run(policy, tokenizer, ["Where is Theta?"], LongResults(), length, **budgets)
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    model_text, env_text = split_by_mask(tokenizer, ids, mask)
    assert out["num_searches"] == [2] and out["well_formed"] == [True]
    assert model_text.endswith("<answer> Lima </answer>") and ids[-1] == tokenizer.eos_token_id
    assert len(ids) <= length
    assert env_text.count("<information>") == env_text.count("</information>\n\n") == 2  # cut, still closed
    assert trainer._metrics["train"]["search/observations_cut_per_episode"] == [2.0]
    observation_runs, run_length = [], 0
    for m in mask:
        if m == 0:
            run_length += 1
        elif run_length:
            observation_runs.append(run_length)
            run_length = 0
    assert max(observation_runs) <= budgets["max_observation_tokens"]


def test_without_an_observation_budget_the_same_episode_is_cut_before_its_answer(policy, tokenizer):
    # What the old single budget did: results eat the completion, the answer turn never comes.
    out, _ = run(policy, tokenizer, ["Where is Theta?"], LongResults(), 385)
    assert out["well_formed"] == [False] and out["completion_ids"][0][-1] != tokenizer.eos_token_id


def test_a_turn_out_of_its_budget_is_an_invalid_action_not_the_end(policy, tokenizer):
    out, _ = run(
        policy, tokenizer, ["Where is Iota?"], LongResults(), 2000, max_turn_tokens=32, max_observation_tokens=64
    )
    assert out["invalid_actions"] == [2]  # turns 1 and 2; the third is the answer turn, which ends the episode
    assert [len(tokenizer(t, add_special_tokens=False)["input_ids"]) <= 33 for t in out["policy_turns"][0]] == [
        True
    ] * 3
    assert out["completion_ids"][0][-1] == tokenizer.eos_token_id  # finished, not truncated


def test_a_short_total_budget_is_warned_about_once_with_its_numbers(policy, tokenizer, caplog):
    dataset = qa_dataset(["Where is Beta?"])
    rollout = make_search_rollout(LongResults(), max_turns=2, max_turn_tokens=64, max_observation_tokens=96)
    trainer = make_trainer(policy, tokenizer, dataset, rollout, 300)
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.rollout.loop"):
        rollout(list(dataset["prompt"]), trainer)
        rollout(list(dataset["prompt"]), trainer)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "max_completion_length 300" in warning and "= 385 tokens" in warning


@pytest.mark.parametrize("budget", [0, 15, 2.5, None])
def test_bad_turn_budgets_are_named(budget):
    with pytest.raises(ValueError, match="max_turn_tokens must be an integer >= 16"):
        make_search_rollout(LongResults(), max_turn_tokens=budget)


def test_the_training_job_refuses_a_budget_that_cannot_hold_two_searches():
    args = JobArguments.with_defaults(
        script=SearchScriptArguments(max_turn_tokens=500, max_observation_tokens=500),
        training=SearchTrainingConfig(**{**CPU_DEFAULTS, "max_completion_length": 512}, use_cpu=True),
    )
    with pytest.raises(ValueError, match=r"max_completion_length 512 cannot hold 2 searches.*= 2501 tokens"):
        check_config(args.script, args.engine, args.curriculum, args.training, args.model)


def test_the_cpu_job_defaults_fit_two_searches_and_an_answer():
    args = JobArguments.with_defaults()
    assert args.training.max_completion_length >= episode_budget(
        args.script.max_turns, args.script.max_turn_tokens, args.script.max_observation_tokens
    )
    check_config(args.script, EngineArguments(search_top_k=3), CurriculumArguments(), args.training, ModelConfig())
