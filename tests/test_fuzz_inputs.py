"""Malformed input, fuzzed (hypothesis, a fixed budget per target): QA files (jsonl and parquet), simulator outputs,
model turns, YAML recipes. Each either works or fails with the library's own one-line error that names the bad
value; nothing crashes with an unrelated exception, and a training run never sees a crash from a model's text.
(`serve`'s request bodies are fuzzed in test_serve_hardening.py.)"""

from __future__ import annotations

import json
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ScriptedGenerator
from zerosearch_trl.data import QADataError, load_qa_dataset
from zerosearch_trl.engines.base import SearchRequest
from zerosearch_trl.engines.simulated import SimulatedSearchEngine, parse_documents
from zerosearch_trl.protocol import is_well_formed, parse_action, strip_observations

FAST = settings(max_examples=200, deadline=None)
SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

TAGS = ["<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>", "<think>", "</think>"]
TAGGED_TEXT = st.lists(
    st.one_of(st.sampled_from(TAGS + [" Paris ", "\n", " ", "Doc 1 (Title: x) y", "<", ">", "/"]), st.text(max_size=8)),
    max_size=24,
).map("".join)
"""Text made of protocol fragments: unclosed, nested, repeated and split tags, among arbitrary characters."""

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)
)  # what a mistyped field holds
FIELD_VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=2)
)


# ---- model turns -------------------------------------------------------------------------------------------------


@FAST
@given(TAGGED_TEXT)
def test_any_model_turn_parses_to_one_action(text):
    action = parse_action(text)
    assert action.kind in ("search", "answer", "invalid")
    if action.kind != "invalid":
        assert isinstance(action.content, str) and action.content == action.content.strip()
        assert not any(tag in action.content for tag in ("<search>", "</search>", "<answer>", "</answer>"))
    assert isinstance(is_well_formed(text), bool)
    stripped = strip_observations(text)
    assert "<information>" not in stripped and strip_observations(stripped) == stripped


@FAST
@given(st.lists(TAGGED_TEXT, min_size=1, max_size=4))
def test_tags_split_across_turns_never_break_the_format_check(turns):
    assert isinstance(is_well_formed(turns), bool)


# ---- simulator outputs -------------------------------------------------------------------------------------------


@FAST
@given(st.one_of(TAGGED_TEXT, st.text(max_size=300)), st.integers(1, 40))
def test_any_simulator_output_parses_to_documents_with_text(text, max_words):
    for document in parse_documents(text, max_words=max_words):
        assert document.text.strip() and len(document.text.split()) <= max_words


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(TAGGED_TEXT, st.text(max_size=200)), min_size=1, max_size=3), st.integers(1, 5))
def test_a_simulated_search_always_returns_top_k_documents_whatever_the_simulator_writes(outputs, top_k):
    replies = iter(outputs * 50)
    generator = ScriptedGenerator(lambda prompts: [next(replies) for _ in prompts])
    engine = SimulatedSearchEngine(generator, top_k=top_k, max_retries=1, retry_backoff=0, seed=0)
    results = engine.search([SearchRequest("lyon", "Where is Lyon?", ("France",)), SearchRequest("x")])
    assert [len(documents) for documents in results] == [top_k, top_k]
    assert all(d.text.strip() for documents in results for d in documents)


# ---- QA files ----------------------------------------------------------------------------------------------------

QA_ROWS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "question": FIELD_VALUES,
            "golden_answers": FIELD_VALUES,
            "answer": FIELD_VALUES,
            "id": FIELD_VALUES,
            "data_source": FIELD_VALUES,
        },
    ),
    min_size=1,
    max_size=4,
)


def assert_loaded_or_named(path):
    try:
        rows = load_qa_dataset(str(path))
    except QADataError as error:
        message = str(error)
        assert "\n" not in message.split(" (")[0] and path.stem in message, message
        return
    for question, golds in zip(rows["question"], rows["golden_answers"]):
        assert isinstance(question, str) and question.strip() and question != "None", question
        assert isinstance(golds, list) and all(isinstance(g, str) for g in golds), golds


@SLOW
@given(QA_ROWS)
def test_any_jsonl_qa_file_loads_clean_rows_or_names_the_problem(tmp_path, rows):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert_loaded_or_named(path)


@SLOW
@given(QA_ROWS)
def test_any_parquet_qa_file_loads_clean_rows_or_names_the_problem(tmp_path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "qa.parquet"
    try:
        pq.write_table(pa.Table.from_pylist(rows), path)
    except (pa.ArrowException, OverflowError):  # no parquet file can hold these rows: nothing to load
        return
    assert_loaded_or_named(path)


# ---- YAML recipes ------------------------------------------------------------------------------------------------

RECIPE_KEYS = ["max_steps", "learning_rate", "max_turns", "search_top_k", "noise_end", "rewards", "engine",
               "schedule", "per_device_train_batch_size", "heldout_engines", "seed"]  # fmt: skip
UNKNOWN_KEYS = st.text(string.ascii_lowercase + "_", min_size=3, max_size=12).filter(lambda k: k not in RECIPE_KEYS)


@SLOW
@given(st.dictionaries(st.one_of(st.sampled_from(RECIPE_KEYS), UNKNOWN_KEYS), FIELD_VALUES, min_size=1, max_size=4))
def test_a_mistyped_or_unknown_recipe_key_fails_in_the_parser_naming_it(tmp_path, recipe):
    """Parsing and checking a recipe loads nothing; a bad key or value stops there, named, or the recipe is good
    and its values have their fields' types (so nothing deeper meets a list where it wanted a number)."""
    from zerosearch_trl.commands.train import make_parser
    from zerosearch_trl.training.config import check_config

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    try:
        parsed = make_parser().parse_args_and_config(["--config", str(path)])
        check_config(*parsed)
    except SystemExit as exit_:  # argparse: "error: argument --max_steps: invalid int value: 'x'", on stderr
        assert exit_.code == 2
        return
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        assert "\n" not in message and any(str(key) in message or repr(value) in message or str(value) in message
                                            for key, value in recipe.items()), message  # fmt: skip
        return
    script, engine, _, training, _ = parsed
    for key, value in recipe.items():
        held = next(getattr(c, key) for c in (script, engine, training) if hasattr(c, key))
        assert type(held) is type(value) or isinstance(held, (float, list, str)), (key, value, held)


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"per_device_train_batch_size": None}, "per_device_train_batch_size: expected an integer, got None"),
        ({"max_steps": [1, 2]}, r"max_steps: expected an integer, got \[1, 2\] \(list\)"),
        ({"rewards": 5}, "rewards: expected a list of strings, got 5"),
        ({"heldout_engines": 3}, "heldout_engines: expected a string or null, got 3"),
        ({"seed": 1.5}, "seed: expected an integer, got 1.5"),
    ],
)
def test_a_mistyped_recipe_value_is_named_before_any_config_is_built(tmp_path, recipe, message):
    from zerosearch_trl.commands.train import make_parser

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match=message):
        make_parser().parse_args_and_config(["--config", str(path)])


def test_recipe_strings_are_still_converted_by_argparse(tmp_path):
    from zerosearch_trl.commands.train import make_parser

    path = tmp_path / "recipe.yaml"
    path.write_text("learning_rate: 1e-5\nmax_steps: '7'\nlora_target_modules: all-linear\n")  # YAML: 1e-5 is a str
    _, _, _, training, model = make_parser().parse_args_and_config(["--config", str(path)])
    assert (training.learning_rate, training.max_steps, model.lora_target_modules) == (1e-5, 7, "all-linear")
