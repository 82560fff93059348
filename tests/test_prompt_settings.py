"""A trained model carries how it was prompted, and eval, probe and load_model use it (#20, item 8)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from helpers import PASSAGE_ROWS
from zerosearch_trl.commands.eval import main as eval_main
from zerosearch_trl.commands.tools import ProbeConfig, probe
from zerosearch_trl.models import load_model, resolve_prompt_settings
from zerosearch_trl.prompts import PROMPT_SETTINGS_FILE, PromptSettings


@pytest.fixture
def trained_dir(tmp_path, tiny_model_dir):
    """A model folder as the training job leaves it: weights, tokenizer and the prompt it was trained with."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_model_dir, folder)
    PromptSettings("one_shot", "<think>").save(folder)
    return folder


def test_settings_round_trip_and_a_bad_file_is_named(tmp_path, caplog):
    assert PromptSettings.read(tmp_path) is None
    PromptSettings("one_shot", None).save(tmp_path)
    assert PromptSettings.read(tmp_path) == PromptSettings("one_shot", None, "tags")
    (tmp_path / PROMPT_SETTINGS_FILE).write_text('{"prompt_style": "few_shot"}')
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.prompts"):
        assert PromptSettings.read(tmp_path) is None
    assert PROMPT_SETTINGS_FILE in caplog.text and "few_shot" in caplog.text


def test_load_model_attaches_the_settings_and_they_travel_with_a_resave(trained_dir, tmp_path):
    model, _ = load_model(trained_dir)
    assert model.config.zerosearch_prompt == {"prompt_style": "one_shot", "prefill": "<think>", "protocol": "tags"}
    model.save_pretrained(tmp_path / "copy")
    assert (
        json.loads((tmp_path / "copy" / "config.json").read_text())["zerosearch_prompt"]["prompt_style"] == "one_shot"
    )
    assert resolve_prompt_settings(model).prompt_style == "one_shot"  # from the loaded model itself


def test_resolution_prefers_the_request_then_the_model_then_the_defaults(trained_dir, tiny_model_dir, caplog):
    assert resolve_prompt_settings(trained_dir) == PromptSettings("one_shot", "<think>")
    assert resolve_prompt_settings(tiny_model_dir) == PromptSettings("zero_shot", "<think>")  # trained by nobody
    assert resolve_prompt_settings("default").prompt_style == "one_shot"
    assert resolve_prompt_settings(tiny_model_dir, prefill="").prefill is None
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="zerosearch_trl.models"):
        asked = resolve_prompt_settings(trained_dir, "zero_shot")
    assert asked.prompt_style == "zero_shot"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "trained with prompt_style='one_shot'" in warning and "'zero_shot'" in warning


def test_eval_plays_a_trained_model_with_the_prompt_it_was_trained_with(trained_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in PASSAGE_ROWS))
    questions = tmp_path / "qa.jsonl"
    questions.write_text(
        json.dumps({"question": "Which city is the third largest of France?", "golden_answers": ["Lyon"]})
    )
    out = tmp_path / "eval"
    flags = ["--model", str(trained_dir), "--datasets", str(questions), "--engine", "bm25", "--corpus", str(corpus)]
    budgets = ["--max_turn_tokens", "16", "--max_observation_tokens", "64", "--output_dir", str(out)]
    assert eval_main(flags + budgets) == 0
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["prompt_style"] == "one_shot" and config["prefill"] == "<think>"


def test_probe_uses_the_trained_prompt(trained_dir):
    report = probe(ProbeConfig(model=str(trained_dir), n_samples=2, max_new_tokens=4, batch_size=2))
    assert report["config"]["prompt_style"] == "one_shot" and report["config"]["prefill"] == "<think>"
