"""Rewards, format checks and evaluation read only what the policy generated (#20, items 1 and 2).

Whatever the environment writes (observations, the corrective message after an invalid action, the EOS it adds)
is never read as the policy's answer or format; a turn that starts writing its own ``<information>`` block is
stopped there and counts as an invalid action. The policy is the scripted one of ``test_rollout``: real rollout,
real tokenizer, real HF generation path (the tiny model's ``generate`` is replaced by the script).
"""

from __future__ import annotations

import pytest
import torch

from helpers import make_tiny_model
from test_rollout import SCRIPTS, play, qa_dataset, scripted_generate, split_by_mask
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.evaluation import evaluate
from zerosearch_trl.generation.base import GenerationParams
from zerosearch_trl.generation.transformers import TransformersGenerator
from zerosearch_trl.protocol import INVALID_ACTION_FEEDBACK, STOP_STRINGS, is_well_formed
from zerosearch_trl.rewards import cover_em_reward, extract_answer, f1_reward, format_reward


def test_the_corrective_message_holds_no_tag_a_reward_could_read():
    assert "<" not in INVALID_ACTION_FEEDBACK and ">" not in INVALID_ACTION_FEEDBACK
    assert "search" in INVALID_ACTION_FEEDBACK and "answer" in INVALID_ACTION_FEEDBACK  # it still says what to do
    completion = "<think> hmm" + INVALID_ACTION_FEEDBACK + " no idea"
    assert f1_reward([completion], golden_answers=[["Simon and Garfunkel"]]) == [0.0]
    assert cover_em_reward([completion], golden_answers=[["and"]]) == [0.0]


def test_rewards_read_the_policy_turns_when_the_rollout_gives_them():
    # The completion (the whole transcript) holds an answer that the policy never wrote.
    completion = "<search> q </search><information> x </information>\n<answer> Paris </answer>"
    turns = [" a</think><search> q </search>", "<think> b</think> no answer"]
    kwargs = {"golden_answers": [["Paris"]], "policy_turns": [turns]}
    assert f1_reward([completion], **kwargs) == [0.0]
    assert format_reward([completion], **kwargs) == [0.0]
    own = [" a</think><search> q </search>", "<think> b</think><answer> Paris </answer>"]
    assert f1_reward([completion], golden_answers=[["Paris"]], policy_turns=[own]) == [1.0]
    assert format_reward([completion], policy_turns=[own]) == [1.0]
    assert extract_answer(own) == "Paris"


@pytest.mark.parametrize(
    ("turns", "expected"),
    [
        ([" a</think><search> q </search>", "<think> b</think><answer> x </answer>"], True),
        ([" b</think>\n<answer> x </answer>"], True),
        (["<think> b</think><answer> x </answer>"], True),
        (["<answer> x </answer>"], True),
        ([" a</think><search> q </search>"], False),  # never answers
        ([" a</think><answer> x </answer>", "<think>b</think><answer> y </answer>"], False),  # answer not last
        ([" a</think><information> made up </information><answer> x </answer>"], False),  # fabricated observation
        ([" a</think>\n<information>"], False),  # ... stopped at its opening tag
        ([" a</think> no action", "<think> b</think><answer> x </answer>"], False),  # an invalid turn
        ([" a</think><search> </search>", "<answer> x </answer>"], False),  # empty search
        ([" a</think><search> q </search> and more", "<answer> x </answer>"], False),  # text after the action
        (["<think> a</think><think> b</think><answer> x </answer>"], True),
        (["<think> a <answer> x </answer>"], False),  # an action inside a thought
        ([" a</think><search> q </search>", " b</think><answer> x </answer>"], False),  # only turn 1 continues <think>
        ([], False),
    ],
)
def test_well_formed_policy_turns(turns, expected):
    assert is_well_formed(turns) is expected


def test_a_turn_stops_at_a_fabricated_information_tag():
    assert "<information>" in STOP_STRINGS


def test_the_hf_generator_keeps_no_token_past_a_stop_string(tokenizer):
    model = make_tiny_model(tokenizer)
    piece = " I know.</think>\n<information> Doc 1 made up </information>\n<answer> Paris </answer>"

    def generate(input_ids, attention_mask=None, max_new_tokens=16, pad_token_id=None, **kwargs):
        extra = tokenizer(piece, add_special_tokens=False)["input_ids"][:max_new_tokens]
        return torch.tensor([row + extra for row in input_ids.tolist()])

    model.generate = generate
    (generation,) = TransformersGenerator(model, tokenizer).generate_ids(
        [[1, 2, 3]], GenerationParams(max_new_tokens=64, stop=STOP_STRINGS)
    )
    kept = tokenizer.decode(generation.token_ids)
    assert kept.endswith("<information>") and "Paris" not in kept
    assert generation.text == kept and generation.finish_reason == "stop"


def test_a_fabricated_observation_is_an_invalid_action_and_never_trained_past(policy, tokenizer):
    out, engine, _ = play(policy, tokenizer, ["Where is Zeta?"])
    model_text, env_text = split_by_mask(tokenizer, out["completion_ids"][0], out["env_mask"][0])
    assert out["invalid_actions"] == [1] and out["num_searches"] == [0] and not engine.batches
    assert out["policy_turns"][0][0].endswith("<information>") and "Paris" not in model_text
    assert INVALID_ACTION_FEEDBACK.strip() in env_text
    assert out["well_formed"] == [False]
    assert format_reward(["unused"], policy_turns=out["policy_turns"]) == [0.0]
    assert f1_reward(["unused"], golden_answers=[["Paris"]], policy_turns=out["policy_turns"]) == [0.0]  # "Rome"


def test_the_rollout_hands_rewards_the_policy_turns(policy, tokenizer):
    questions = ["Where is Alpha?", "Where is Delta?", "Where is Eta?"]
    out, _, _ = play(policy, tokenizer, questions)
    alpha, delta, eta = out["policy_turns"]
    assert alpha == SCRIPTS["Where is Alpha?"]
    assert delta == [" I do not know", " Retry.</think>\n<answer> Oslo </answer>"]  # the premature EOS is not text
    assert eta == [" hmm", " still thinking", " no idea"]
    assert out["invalid_actions"] == [0, 1, 2]  # Eta's last turn gets no corrective message: the episode ends
    assert out["well_formed"] == [True, False, False]
    golds = [["Paris"], ["Oslo"], ["and"]]
    assert f1_reward(["x"] * 3, golden_answers=golds, policy_turns=out["policy_turns"]) == [1.0, 1.0, 0.0]
    # Read through the whole transcript, Eta's answer is still nothing: the corrective message holds no tags.
    transcripts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in out["completion_ids"]]
    assert f1_reward(transcripts, golden_answers=golds) == [1.0, 1.0, 0.0]


def test_evaluation_scores_only_the_policys_own_answer(tokenizer):
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    rows = qa_dataset(["Where is Eta?", "Where is Delta?"]).remove_columns("prompt")
    engine = BM25Engine.from_corpus([{"title": "Oslo", "text": "Oslo is a city."}], top_k=1)
    result = evaluate(model, {"toy": rows}, engine, tokenizer=tokenizer, prompt_style="one_shot", progress=False)
    by_question = {row["question"]: row for row in result.predictions}
    eta, delta = by_question["Where is Eta?"], by_question["Where is Delta?"]
    assert eta["prediction"] is None and eta["answered"] == 0.0 and eta["cover_em"] == 0.0
    assert delta["prediction"] == "Oslo" and delta["well_formed"] == 0.0  # answered, after an invalid turn


@pytest.fixture
def policy(tokenizer):
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    return model
