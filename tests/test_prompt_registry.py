"""Each episode's searches carry its own row's gold answers, also when prompts repeat (#20, item 7)."""

from __future__ import annotations

import logging

import datasets

from helpers import make_tiny_model
from test_rollout import RecordingEngine, make_trainer, scripted_generate
from zerosearch_trl.prompts import build_policy_prompt
from zerosearch_trl.rollout import make_search_rollout


def rows(pairs):
    return datasets.Dataset.from_list(
        [{"prompt": build_policy_prompt(q, "one_shot"), "question": q, "golden_answers": g} for q, g in pairs]
    )


def test_duplicate_prompts_with_other_golds_are_merged_with_one_warning(tokenizer, caplog):
    # NQ and HotpotQA hold such duplicates: the same question, different gold lists.
    train = rows([("Where is Alpha?", ["Paris"]), ("Where is Beta?", ["Rome"]), ("Where is Alpha?", ["Paris, France"])])
    heldout = rows([("Where is Alpha?", ["City of Light"]), ("Where is Beta?", ["Rome"])])
    engine = RecordingEngine()
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.rollout.registry"):
        rollout = make_search_rollout(engine, datasets=[train, heldout])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "1 prompt" in warnings[0] and "'Where is Alpha?'" in warnings[0] and "merged" in warnings[0]

    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    trainer = make_trainer(model, tokenizer, train, rollout, 400)
    rollout([train[0]["prompt"]], trainer)
    (request,) = engine.batches[0]
    # The simulator is told every gold answer the question has, not whichever row was registered last.
    assert request.golden_answers == ("Paris", "Paris, France", "City of Light")


def test_the_same_golds_twice_is_no_conflict(caplog):
    same = rows([("Where is Beta?", ["Rome"]), ("Where is Beta?", ["Rome"])])
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.rollout.registry"):
        make_search_rollout(RecordingEngine(), datasets=[same])
    assert not caplog.records


def test_a_heldout_question_is_never_trained_on_even_when_the_data_repeats_it(tmp_path, caplog):
    import json

    from zerosearch_trl.training.config import SearchScriptArguments
    from zerosearch_trl.training.job import load_training_data

    questions = ["q1", "q2", "q3", "q2", "q5", "q2"]  # the last two rows are held out; q2 is also in training
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": q, "golden_answers": ["a"]}) + "\n" for q in questions))
    args = SearchScriptArguments(dataset=str(path), heldout_questions=2)
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.training.job"):
        train, heldout, _ = load_training_data(args, "zero_shot")
    assert list(heldout["question"]) == ["q5", "q2"]
    assert list(train["question"]) == ["q1", "q3"]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "zerosearch_trl.training.job"]
    assert "2 training rows" in warning and "'q2'" in warning
