"""Warm start: the SFT trajectories, their loss mask, a real SFTTrainer run, and the first-turn search share."""

import doctest
import re

import pytest
import torch

import zerosearch_trl.training.warmstart as warmstart
from helpers import make_tiny_model
from zerosearch_trl.answers import cover_exact_match
from zerosearch_trl.demo import make_demo_task
from zerosearch_trl.prompts import THINK_PREFILL, build_policy_prompt, render_policy_prompt
from zerosearch_trl.protocol import is_well_formed
from zerosearch_trl.rewards import extract_answer
from zerosearch_trl.training.probe import well_formed_search_share
from zerosearch_trl.training.warmstart import make_warmstart_dataset, tokenize_warmstart_dataset, warm_start

SEARCH = re.compile(r"<search> (.*?) </search>")
INFORMATION = re.compile(r"\n\n<information>(.*?)</information>\n\n", re.DOTALL)


@pytest.fixture(scope="module")
def task():
    return make_demo_task(128, seed=3)


@pytest.fixture(scope="module")
def rows(task):
    return make_warmstart_dataset(task, n_examples=96, seed=1)


def completion_text(row) -> str:
    (message,) = row["completion"]
    assert message["role"] == "assistant"
    return message["content"]


def test_rows_are_well_formed_rollout_prompts_and_trajectories(rows):
    for row in rows:
        text = completion_text(row)
        assert text.startswith(THINK_PREFILL) and is_well_formed(text), text
        assert row["prompt"] == build_policy_prompt(row["question"], "one_shot")
        # Observations are rendered exactly as the environment appends them after a search.
        assert len(INFORMATION.findall(text)) == len(SEARCH.findall(text)) == text.count("<information>")


def test_searches_follow_the_question_entity_then_the_bridge(rows, task):
    passages = dict(zip(task.corpus["title"], task.corpus["text"]))
    hops = {1: 0, 2: 0}
    for row in rows:
        text = completion_text(row)
        queries, observations = SEARCH.findall(text), INFORMATION.findall(text)
        hops[len(queries)] += 1
        assert queries[0] in row["question"] and queries[0] in passages
        # Each observation holds the searched entity's own passage, rendered as the environment renders it.
        for query, observation in zip(queries, observations):
            assert f"(Title: {query}) {passages[query]}" in observation
        if len(queries) == 2:
            assert queries[1] in passages[queries[0]] and queries[1] not in row["question"]
        # Two-hop demo questions need the second search (in this world no first passage states their answer).
        if "country" in row["question"] or "organisation founded by" in row["question"]:
            assert len(queries) == 2, row["question"]
    assert hops[1] and hops[2]  # both kinds are present


def test_gold_answer_is_in_the_last_observation_and_in_the_answer(rows):
    for row in rows:
        text = completion_text(row)
        gold = row["golden_answers"]
        last = INFORMATION.findall(text)[-1]
        assert cover_exact_match(last, gold) == 1.0
        assert extract_answer(text) == gold[0]
        # Exactly one document states the answer: the distractors never do.
        assert sum(cover_exact_match(doc, gold) for doc in last.split("\n")) == 1.0


def test_n_docs_and_max_turns(task):
    rows = make_warmstart_dataset(task, n_examples=40, n_docs=5, max_turns=1, seed=0)
    for row in rows:
        text = completion_text(row)
        assert len(SEARCH.findall(text)) == 1
        assert [re.findall(r"^Doc (\d) ", o, re.MULTILINE) for o in INFORMATION.findall(text)] == [list("12345")]
        assert "country" not in row["question"] and "organisation founded by" not in row["question"]


def test_held_out_questions_and_their_entities_are_excluded(task):
    held_out = task.dataset.select(range(64))["question"]
    rows = make_warmstart_dataset(task, n_examples=128, exclude_questions=held_out, seed=0)
    assert not set(rows["question"]) & set(held_out)
    # The entities the held-out questions name are never searched either.
    people = {name for q in held_out for name in re.findall(r"by (\w+ \w+)|was (\w+ \w+) born|did (\w+ \w+) found", q)}
    named = {n for group in people for n in group if n}
    assert named and not named & {q for row in rows for q in SEARCH.findall(completion_text(row))}
    # Fewer usable questions than rows: questions repeat, each time with its own trajectory.
    assert len(set(rows["question"])) <= 64 < len(rows)
    # Whitespace and case do not smuggle a held-out question back in.
    again = make_warmstart_dataset(task, n_examples=8, exclude_questions=[f"  {q.upper()} " for q in held_out])
    assert not set(again["question"]) & set(held_out)


def test_seeded_determinism(task):
    first = make_warmstart_dataset(task, n_examples=24, seed=5)
    assert first.to_list() == make_warmstart_dataset(task, n_examples=24, seed=5).to_list()
    other = make_warmstart_dataset(task, n_examples=24, seed=6)
    assert first["completion"] != other["completion"]
    # The default task is the seeded demo world.
    assert (
        make_warmstart_dataset(n_examples=4, seed=2).to_list() == make_warmstart_dataset(n_examples=4, seed=2).to_list()
    )


def test_think_wording_varies(rows):
    used = set()
    for row in rows:
        text = completion_text(row)
        thought = text[len(THINK_PREFILL) : text.index("</think>")].strip()
        entity = SEARCH.findall(text)[0]
        (template,) = [t for t in warmstart._SEARCH_THOUGHTS if t.format(entity=entity) == thought]
        used.add(template)
    assert len(used) >= 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_examples": 0}, "n_examples must be an integer >= 1, got 0"),
        ({"max_turns": 0}, "max_turns must be an integer >= 1, got 0"),
        ({"n_docs": 2.5}, "n_docs must be an integer >= 1, got 2.5"),
        ({"prompt_style": "few_shot"}, "few_shot"),
        ({"exclude_questions": "Who?"}, "exclude_questions"),
        ({"task": "demo"}, "task must be a DemoTask"),
    ],
)
def test_make_warmstart_dataset_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_warmstart_dataset(**kwargs)


def test_everything_held_out_is_an_error():
    task = make_demo_task(8, seed=0)
    with pytest.raises(ValueError, match="No question of the task is usable after excluding 8 held-out"):
        make_warmstart_dataset(task, exclude_questions=task.dataset["question"])


def test_labels_cover_exactly_the_policy_tokens(rows, tokenizer):
    subset = rows.select(range(12))
    features = tokenize_warmstart_dataset(subset, tokenizer)
    assert features.column_names == ["input_ids", "labels"]
    for row, feature in zip(subset, features):
        ids, labels = feature["input_ids"], feature["labels"]
        text = completion_text(row)
        context = render_policy_prompt(tokenizer, row["prompt"], THINK_PREFILL)
        # The context is the rollout's prompt ids (prompt + prefill, tokenized alone), never trained.
        prompt_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids and set(labels[: len(prompt_ids)]) == {-100}
        assert tokenizer.decode(ids) == context + text[len(THINK_PREFILL) :] + tokenizer.eos_token
        # Split the completion into runs of trained / masked tokens and decode each run.
        runs, start = [], len(prompt_ids)
        for i in range(start + 1, len(ids) + 1):
            if i == len(ids) or (labels[i] == -100) != (labels[start] == -100):
                runs.append((labels[start] != -100, tokenizer.decode(ids[start:i])))
                start = i
        assert [trained for trained, _ in runs] == [True, False] * len(INFORMATION.findall(text)) + [True]
        masked = [piece for trained, piece in runs if not trained]
        assert masked == [m.group(0) for m in INFORMATION.finditer(text)]  # exactly the <information> spans
        trained = [piece for t, piece in runs if t]
        assert trained[-1].endswith("</answer>" + tokenizer.eos_token)
        assert "".join(trained) == INFORMATION.sub("", text[len(THINK_PREFILL) :]) + tokenizer.eos_token
        assert all(label in (-100, token) for label, token in zip(labels, ids))


def test_without_a_prefill_the_think_tag_is_trained(rows, tokenizer):
    feature = tokenize_warmstart_dataset(rows.select(range(1)), tokenizer, prefill=None)[0]
    trained = [t for t, label in zip(feature["input_ids"], feature["labels"]) if label != -100]
    assert tokenizer.decode(trained).startswith(THINK_PREFILL + " ")


def test_tokenize_rejects_rows_it_cannot_split(rows, tokenizer):
    with pytest.raises(ValueError, match="missing \\['completion'\\]"):
        tokenize_warmstart_dataset(rows.remove_columns("completion"), tokenizer)
    unprefilled = rows.select(range(1)).map(lambda r: {"completion": [{"role": "assistant", "content": "Paris"}]})
    with pytest.raises(ValueError, match="does not start with the prefill '<think>'"):
        tokenize_warmstart_dataset(unprefilled, tokenizer)


def _changed(before: dict[str, torch.Tensor], model) -> int:
    after = model.state_dict()
    return sum(not torch.equal(before[name], after[name]) for name in before)


@pytest.mark.slow
def test_warm_start_trains_a_tiny_model_with_sft_trainer(rows, tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = warm_start(
        model, tokenizer, rows.select(range(4)), output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2
    )
    assert trained is model and not trained.training
    assert _changed(before, trained) == len(before)  # full fine-tuning moves every weight


@pytest.mark.slow
def test_warm_start_with_lora_returns_the_merged_model(rows, tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = warm_start(
        model,
        tokenizer,
        rows.select(range(4)),
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        lora=True,
        lora_r=4,
    )
    assert type(trained).__name__ == "LlamaForCausalLM" and set(trained.state_dict()) == set(before)
    changed = _changed(before, trained)
    # The adapters were merged into the linear layers only: embeddings and norms are untouched.
    assert 0 < changed < len(before)
    assert torch.equal(before["model.embed_tokens.weight"], trained.state_dict()["model.embed_tokens.weight"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_steps": 0}, "max_steps must be an integer >= 1, got 0"),
        ({"per_device_train_batch_size": -2}, "per_device_train_batch_size must be an integer >= 1, got -2"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0, got 0.0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0, got nan"),
        ({"lora": "yes"}, "lora must be True or False, got 'yes'"),
        ({"lora_r": 0}, "lora_r must be an integer >= 1, got 0"),
        ({"output_dir": ""}, "output_dir must be a non-empty path string, got ''"),
    ],
)
def test_warm_start_rejects_bad_arguments_before_training(kwargs, message, tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = {"output_dir": str(tmp_path / "out"), **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        warm_start(model, tokenizer, **settings)
    assert _changed(before, model) == 0 and not (tmp_path / "out").exists()


def test_warm_start_rejects_a_bad_model_or_dataset(rows, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="model must be a transformers causal LM, got None"):
        warm_start(None, tokenizer, rows, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="dataset is empty"):
        warm_start(make_tiny_model(tokenizer), tokenizer, rows.select([]), output_dir=str(tmp_path))


def test_well_formed_search_share_counts_first_turns(tokenizer):
    model = make_tiny_model(tokenizer)
    report = well_formed_search_share(model, tokenizer, ["Who wrote Dune?", "Where is Lund?"], n=5)
    assert sum(report["counts"].values()) == 5 and abs(sum(report["shares"].values()) - 1.0) < 1e-9
    assert [s["question"] for s in report["samples"]] == ["Who wrote Dune?", "Where is Lund?"] * 2 + ["Who wrote Dune?"]
    # A random model writes no complete action.
    assert report["counts"]["invalid"] == 5 and all(s["content"] == "" for s in report["samples"])


@pytest.mark.parametrize(
    ("questions", "n", "message"), [([], None, "non-empty"), ("Who?", None, "non-empty"), (["q"], 0, "n must")]
)
def test_well_formed_search_share_rejects_bad_arguments(questions, n, message, tokenizer):
    with pytest.raises(ValueError, match=message):
        well_formed_search_share(make_tiny_model(tokenizer), tokenizer, questions, n=n)


def test_docstring_examples():
    result = doctest.testmod(warmstart)
    assert result.attempted > 0 and result.failed == 0
