"""Simulator SFT: collection against a real BM25 index, the SFT rows, a real SFTTrainer + LoRA step, the check."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from helpers import PASSAGE_ROWS, ScriptedGenerator
from test_evaluation import CASES, ScriptedPolicy, qa_rows
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.simulated import SimulatedSearchEngine, parse_documents
from zerosearch_trl.simulator.check import check_simulator, write_simulator_check
from zerosearch_trl.simulator.collect import collect_simulator_data
from zerosearch_trl.simulator.sft import make_simulator_sft_dataset, train_simulator

# Every fact twice, so that each search finds two documents.
CORPUS = PASSAGE_ROWS + [{**row, "id": f"{row['id']}-b", "title": f"{row['title']} (more)"} for row in PASSAGE_ROWS]


@pytest.fixture(scope="module")
def pairs(tokenizer):
    engine = BM25Engine.from_corpus(CORPUS, top_k=2)
    return collect_simulator_data(ScriptedPolicy(tokenizer), {"toy": qa_rows()}, engine, tokenizer=tokenizer,
                                  progress=False)  # fmt: skip


def test_collection_labels_pairs_by_outcome_and_by_answer_presence(pairs):
    # Lyon and Bach were answered exactly (useful); Kyoto ("Paris") and Guido were not (noisy); Nile never searched.
    by_question = {row["question"]: row for row in pairs}
    assert len(pairs) == 4 and "Which river flows north through Egypt?" not in by_question
    labels = {q.split()[1]: row["label"] for q, row in by_question.items()}
    assert labels == {"city": "useful", "composed": "useful", "was": "noisy", "created": "noisy"}
    kyoto = by_question["What was the imperial capital of Japan for a thousand years?"]
    assert {d["title"] for d in kyoto["documents"]} == {"Kyoto", "Kyoto (more)"}
    assert all(d["contains_answer"] for d in kyoto["documents"])
    assert kyoto["doc_label"] == "useful"  # the engine found the answer even though the policy got it wrong
    assert {row["engine"] for row in pairs} == {"bm25"} and all(row["collected_at"] for row in pairs)
    assert kyoto["query"] == kyoto["question"] and kyoto["golden_answers"] == ["Kyoto"]


@pytest.mark.parametrize("top_k", [1, 2])
def test_sft_rows_carry_exactly_the_prompt_the_engine_sends_at_training_time(pairs, top_k):
    sft = make_simulator_sft_dataset(pairs, top_k=top_k, words_per_doc=8)
    assert sorted(sft["label"]) == ["noisy", "noisy", "useful", "useful"]
    sent = []

    def record(prompts):
        sent.extend(prompts)
        return ["Doc 1 (Title: A) x y z w v u\nDoc 2 (Title: B) x y z w v u"] * len(prompts)

    engine = SimulatedSearchEngine(ScriptedGenerator(record), top_k=top_k, words_per_doc=8, prompt_format="finetuned")
    for row in sft:
        pair = next(p for p in pairs if p["query"] in row["prompt"][0]["content"])
        engine.search([engine_request(pair)], modes=[row["label"]])
        assert sent[-1][:-1] == row["prompt"]  # the same user message; the engine adds only its prefill
        target = row["completion"][0]["content"]
        assert target.startswith(sent[-1][-1]["content"])  # the prefill is where the target starts
        documents = parse_documents(target)
        assert [d.title for d in documents] == [d["title"] for d in pair["documents"]][:top_k]
        assert all(len(d.text.split()) <= 8 for d in documents)
    by_answer = make_simulator_sft_dataset(pairs, labelling="contains_answer", top_k=2, balance=False)
    assert set(by_answer["label"]) <= {"useful", "noisy"}
    with pytest.raises(ValueError, match="needs both labels"):
        make_simulator_sft_dataset([p for p in pairs if p["label"] == "useful"], top_k=2)


def engine_request(pair):
    from zerosearch_trl.engines.base import SearchRequest

    return SearchRequest(pair["query"], pair["question"], tuple(pair["golden_answers"]))


def test_an_engine_that_returns_nothing_is_a_clear_error(tokenizer):
    class Empty:
        name, top_k = "empty", 2

        def search(self, requests):
            return [[] for _ in requests]

    with pytest.raises(ValueError, match="returned no document"):
        collect_simulator_data(ScriptedPolicy(tokenizer), {"toy": qa_rows()}, Empty(), tokenizer=tokenizer,
                               progress=False)  # fmt: skip


@pytest.mark.slow
def test_real_sft_lora_step_then_merge_and_serve_as_simulator(pairs, tiny_model_dir, tmp_path):
    sft = make_simulator_sft_dataset(pairs, top_k=2, words_per_doc=8)
    out = tmp_path / "simulator"
    before = load_file(tiny_model_dir / "model.safetensors")
    merged = train_simulator(str(tiny_model_dir), sft, output_dir=str(out), max_steps=2, merge=True,
                             per_device_train_batch_size=2, logging_steps=1)  # fmt: skip
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert merged == out / "merged" and (merged / "model.safetensors").is_file()
    after = load_file(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base folder is untouched
    losses = [row["loss"] for row in json.loads((out / "sft_log.json").read_text()) if "loss" in row]
    assert losses and all(math.isfinite(loss) for loss in losses)
    merged_weights = load_file(merged / "model.safetensors")
    assert any(not torch.equal(before[k], merged_weights[k]) for k in before if k in merged_weights)
    from zerosearch_trl.generation.factory import make_generator

    simulator = SimulatedSearchEngine(make_generator("transformers", model=str(merged)), top_k=2, max_new_tokens=24,
                                      prompt_format="finetuned", max_retries=0)  # fmt: skip
    results = simulator.search([engine_request(pairs[0])])
    assert len(results[0]) == 2
    with pytest.raises(ValueError, match="already holds files"):
        train_simulator(str(tiny_model_dir), sft, output_dir=str(out), max_steps=1)


def test_qlora_without_a_gpu_fails_before_loading(pairs, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: QLoRA is allowed")
    with pytest.raises(ValueError, match="QLoRA .* needs a CUDA GPU"):
        train_simulator(
            "no-such-model", make_simulator_sft_dataset(pairs, top_k=2), output_dir=str(tmp_path), load_in_4bit=True
        )


def test_check_simulator_measures_a_known_leak_rate(tmp_path):
    """A scripted simulator: useful results always state the answer; noisy ones leak it for every other question."""
    questions = list(CASES)

    def write(prompts):
        texts = []
        for messages in prompts:
            content = messages[0]["content"]
            question = next(q for q in questions if q in content)
            gold = CASES[question][0]
            leaks = "noisy" in content and questions.index(question) % 2 == 0
            fact = gold if ("useful" in content.split("The results must be ")[1][:7] or leaks) else "nothing"
            texts.append("\n".join(f"Doc {i} (Title: T{i}) a short text about {fact} and more words." for i in (1, 2)))
        return texts

    engine = SimulatedSearchEngine(ScriptedGenerator(write), top_k=2, words_per_doc=8, leak_guard="off", max_retries=0)
    report = check_simulator(engine, qa_rows())
    assert report["questions"] == 5
    assert report["useful_answer_rate"] == 1.0
    assert report["noisy_leak_rate"] == pytest.approx(3 / 5)  # questions 0, 2 and 4 leak
    assert report["format_valid_rate"] == 1.0
    assert 0 < report["distinct_documents"] <= 1 and 0 < report["distinct_bigrams"] <= 1
    markdown = write_simulator_check(report, tmp_path).read_text()
    assert "| noisy results leaking a gold answer | 0.600 | lower |" in markdown


def test_check_simulator_on_a_tiny_model(tiny_model_dir):
    report = check_simulator(str(tiny_model_dir), qa_rows(), top_k=2, words_per_doc=8, limit=2)
    assert report["questions"] == 2
    assert all(0.0 <= report[k] <= 1.0 for k in ("useful_answer_rate", "noisy_leak_rate", "format_valid_rate"))
    assert not math.isnan(report["distinct_bigrams"])


@pytest.mark.slow
def test_cli_sft_then_check_on_collected_pairs(pairs, tiny_model_dir, tmp_path, capsys):
    from zerosearch_trl.cli import main

    pairs_file = tmp_path / "pairs.jsonl"
    pairs.to_json(str(pairs_file), lines=True)
    out = tmp_path / "simulator"
    common = ["--top_k", "2", "--words_per_doc", "8"]
    assert main(["sft-simulator", "--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--output_dir", str(out),
                 "--max_steps", "1", "--per_device_train_batch_size", "2", *common]) == 0  # fmt: skip
    assert (out / "merged" / "model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    questions = tmp_path / "heldout.jsonl"
    qa_rows().to_json(str(questions), lines=True)
    check = tmp_path / "check"
    assert main(["check-simulator", "--model", str(out / "merged"), "--questions", str(questions), "--limit", "2",
                 "--prompt_format", "finetuned", "--output_dir", str(check), *common]) == 0  # fmt: skip
    report = json.loads((check / "simulator_check.json").read_text())
    assert report["questions"] == 2 and report["prompt_format"] == "finetuned"
    assert "noisy_leak_rate" in capsys.readouterr().out
    with pytest.raises(ValueError, match="already holds files"):
        main(["sft-simulator", "--pairs", str(pairs_file), "--output_dir", str(out)])


def test_cli_collection_that_finds_nothing_says_why(tiny_model_dir, tmp_path):
    """A random tiny policy never writes a search: the collection stops with the reason, not an empty file."""
    from zerosearch_trl.cli import main

    with pytest.raises(ValueError, match="No \\(query, documents\\) pair"):
        main(["collect-simulator-data", "--model", str(tiny_model_dir), "--limit", "2", "--search_top_k", "2",
              "--output_dir", str(tmp_path / "data")])  # fmt: skip
    assert not (tmp_path / "data" / "pairs.jsonl").exists()


def test_sft_on_pairs_that_cannot_make_a_dataset_ends_with_one_line_naming_the_fix(pairs, tmp_path, capsys):
    """What the zero-argument path met (#20.10): every pair noisy under the outcome labelling, then a traceback."""
    from zerosearch_trl.cli import main

    noisy_only = pairs.map(lambda row: {"label": "noisy"})
    pairs_file = tmp_path / "pairs.jsonl"
    noisy_only.to_json(str(pairs_file), lines=True)
    capsys.readouterr()  # the progress bars of the lines above
    code = main(["sft-simulator", "--pairs", str(pairs_file), "--output_dir", str(tmp_path / "out"), "--top_k", "2"])
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("zerosearch-trl")]  # besides datasets' progress
    assert code == 2 and "Traceback" not in err and err.rstrip().endswith(line)
    assert "4 collected pairs, 0 useful and 4 noisy under --labelling outcome" in line
    assert "--labelling contains_answer" in line
    assert not (tmp_path / "out" / "adapter_config.json").exists()
