import json

import datasets
import pytest

from zerosearch_trl.data import QADataError, load_qa_dataset
from zerosearch_trl.prompts import POLICY_TEMPLATES

COLUMNS = {"prompt", "question", "golden_answers", "data_source"}


@pytest.mark.parametrize(
    ("name", "data_source"),
    [
        ("nq.sample.jsonl", "nq"),
        ("hotpotqa.sample.jsonl", "hotpotqa"),
        ("2wiki.sample.jsonl", "2wiki"),
        ("musique.sample.jsonl", "musique"),
        ("nq.verl-format.sample.jsonl", "google-research-datasets/nq_open"),
        ("musique.verl-format.sample.parquet", "bdsaglam/musique"),
    ],
)
def test_shared_layouts(shared_data, name, data_source):
    path = shared_data / "qa" / name
    ds = load_qa_dataset(path)
    raw = [json.loads(line) for line in path.open()] if path.suffix == ".jsonl" else None
    assert COLUMNS <= set(ds.column_names)
    assert len(ds) == (len(raw) if raw else 50)
    row = ds[0]
    assert row["data_source"] == data_source
    assert row["golden_answers"] and all(isinstance(a, str) for a in row["golden_answers"])
    assert row["prompt"][0]["role"] == "user" and row["question"] in row["prompt"][0]["content"]
    if raw and "golden_answers" in raw[0]:
        assert row["question"] == raw[0]["question"].strip() and row["golden_answers"] == raw[0]["golden_answers"]
        assert row["id"] == raw[0]["id"]
    if raw and "reward_model" in raw[0]:
        assert row["question"] == raw[0]["extra_info"]["question"].strip()
        assert row["golden_answers"] == [raw[0]["reward_model"]["ground_truth"]]


def test_corpus_questions_load(shared_data):
    ds = load_qa_dataset(shared_data / "corpus" / "corpus-qa.jsonl", prompt_style="one_shot", limit=10)
    assert len(ds) == 10
    assert ds[0]["prompt"][0]["content"] == POLICY_TEMPLATES["one_shot"].format(question=ds[0]["question"])


def test_in_memory_dataset_and_answer_column():
    raw = datasets.Dataset.from_list([{"question": "q1", "answer": "a1"}, {"question": " q2 ", "answer": "a2"}])
    ds = load_qa_dataset(raw, data_source="mine")
    assert ds["golden_answers"] == [["a1"], ["a2"]]
    assert ds["question"] == ["q1", "q2"]
    assert ds["data_source"] == ["mine", "mine"]


def test_search_r1_target_ground_truth(tmp_path):
    path = tmp_path / "train.jsonl"
    row = {
        "data_source": "nq",
        "prompt": [{"role": "user", "content": "long instruction... Question: who?"}],
        "reward_model": {"ground_truth": {"target": ["x", "y"]}, "style": "rule"},
        "extra_info": {},
    }
    path.write_text(json.dumps(row) + "\n")
    ds = load_qa_dataset(path)
    assert ds[0]["golden_answers"] == ["x", "y"]
    assert ds[0]["question"] == "long instruction... Question: who?"


def test_dataset_folder(tmp_path):
    datasets.DatasetDict(
        {"test": datasets.Dataset.from_list([{"question": "q", "golden_answers": ["a"]}])}
    ).save_to_disk(tmp_path / "ds")
    assert load_qa_dataset(tmp_path / "ds")["question"] == ["q"]
    with pytest.raises(QADataError, match="no split 'dev'"):
        load_qa_dataset(tmp_path / "ds", split="dev")


def test_missing_column_names_file_and_columns(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"query": "q", "golden_answers": ["a"]}) + "\n")
    with pytest.raises(QADataError) as error:
        load_qa_dataset(path)
    message = str(error.value)
    assert "bad" in message and "'query'" in message and "'question'" in message


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_qa_dataset(tmp_path / "nope.jsonl")
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(QADataError, match="broken.parquet"):
        load_qa_dataset(broken)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(QADataError, match="empty.jsonl"):
        load_qa_dataset(empty)


def test_unknown_prompt_style(tmp_path):
    raw = datasets.Dataset.from_list([{"question": "q", "golden_answers": ["a"]}])
    with pytest.raises(ValueError, match="few_shot"):
        load_qa_dataset(raw, prompt_style="few_shot")
