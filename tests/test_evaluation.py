"""evaluate / zerosearch-trl eval: real BM25 engine, real rollout loop, scores checked against known answers."""

from __future__ import annotations

import json

import datasets
import pytest

from helpers import PASSAGE_ROWS, make_tiny_model
from zerosearch_trl.commands.eval import EvalArguments, check_eval_args
from zerosearch_trl.commands.eval import main as eval_main
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.evaluation import evaluate, summarize, write_evaluation
from zerosearch_trl.generation.base import Generation

# question -> (gold, the scripted policy's answer, whether it searches first)
CASES = {
    "Which city is the third largest of France?": ("Lyon", "Lyon", True),
    "Who composed the Brandenburg Concertos?": ("Johann Sebastian Bach", "Johann Sebastian Bach", True),
    "What was the imperial capital of Japan for a thousand years?": ("Kyoto", "Paris", True),
    "Which river flows north through Egypt?": ("Nile", "the Nile", False),
    "Who created the Python programming language?": ("Guido van Rossum", "Guido", True),
}


class ScriptedPolicy:
    """A policy whose every turn is known: search once (or not), then answer; ``fail`` questions raise.

    It generates from token ids like the real backends (the rollout loop and scoring are the code under test).
    """

    def __init__(self, tokenizer, fail=(), error=()):
        self.tokenizer, self.fail, self.error, self.batches = tokenizer, set(fail), set(error), []

    def generate_ids(self, input_ids, params):
        assert params.temperature == 0.0  # evaluation decodes greedily by default
        self.batches.append(len(input_ids))
        out = []
        for ids in input_ids:
            text = self.tokenizer.decode(ids)
            question = next(q for q in CASES if q in text)
            if question in self.fail:
                raise RuntimeError("policy backend down")
            if question in self.error:
                out.append(Generation(text="", finish_reason="error", token_ids=[]))
                continue
            episode = text.rsplit("<|im_start|>assistant", 1)[-1]  # the one-shot example holds tags too
            _, answer, searches = CASES[question]
            if searches and "<information>" not in episode:
                reply = f" Let me look it up.</think>\n<search> {question} </search>"
            else:  # after an observation the turn opens its own <think> (the first one was prefilled)
                opening = "\n<think>" if "<information>" in episode else ""
                reply = f"{opening} I know it.</think>\n<answer> {answer} </answer>"
            ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            out.append(Generation(text=reply, token_ids=ids))
        return out


def qa_rows(questions=CASES):
    return datasets.Dataset.from_list(
        [{"id": f"q{i}", "question": q, "golden_answers": [CASES[q][0]]} for i, q in enumerate(questions)]
    )


@pytest.fixture
def engine():
    return BM25Engine.from_corpus(PASSAGE_ROWS, top_k=2)


def test_scores_come_out_exactly_and_every_row_is_scored(tokenizer, engine):
    policy = ScriptedPolicy(tokenizer)
    result = evaluate(
        policy, {"toy": qa_rows()}, engine, tokenizer=tokenizer, batch_size=2, prompt_style="one_shot", progress=False
    )
    scores = result.datasets["toy"]
    assert scores["n"] == 5  # 5 rows in batches of 2: the last partial batch is scored too
    assert max(policy.batches) == 2 and 1 in policy.batches  # one turn per call; the lone fifth row too
    assert scores["exact_match"] == pytest.approx(3 / 5)  # Lyon, Bach, "the Nile" (articles are dropped)
    assert scores["cover_em"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx((3 + 0 + 0.5) / 5)  # "Guido" vs "Guido van Rossum": F1 0.5
    assert scores["mean_searches"] == pytest.approx(4 / 5)
    assert scores["mean_turns"] == pytest.approx((4 * 2 + 1) / 5)
    assert scores["answered"] == 1.0 and scores["well_formed"] == 1.0 and scores["errors"] == 0
    assert result.overall["n"] == 5 and result.config["decoding"] == "greedy"
    rows = {r["id"]: r for r in result.predictions}
    assert sorted(rows) == ["q0", "q1", "q2", "q3", "q4"]
    lyon = rows["q0"]
    assert lyon["prediction"] == "Lyon" and lyon["searches"] == [next(iter(CASES))]
    assert lyon["documents"][0][0]["title"] == "Lyon"  # what the real BM25 engine returned for the search
    assert lyon["documents"][0][0]["contains_answer"] is True
    assert rows["q3"]["searches"] == [] and rows["q3"]["documents"] == []


def test_rows_in_the_same_slot_of_different_batches_draw_apart(tokenizer):
    """A noisy engine keys each search's draw by its row: with batches of one, every row is the first of its batch,
    and they must not all be drawn alike."""
    from helpers import ScriptedGenerator
    from zerosearch_trl.engines.simulated import SimulatedSearchEngine

    docs = "\n".join(f"Doc {i} (Title: T{i}) document text number {i}." for i in range(1, 3))
    noisy = SimulatedSearchEngine(ScriptedGenerator(lambda p: [docs] * len(p)), top_k=2, noise_prob=0.5, seed=0)
    rows = qa_rows([q for q in CASES if CASES[q][2]] * 3)  # 12 rows that search once
    result = evaluate(
        ScriptedPolicy(tokenizer), {"toy": rows}, noisy, tokenizer=tokenizer, batch_size=1, prompt_style="one_shot",
        progress=False,
    )  # fmt: skip
    labels = [row["documents"][0][0]["label"] for row in result.predictions]
    assert len(labels) == 12 and {"useful", "noisy"} == set(labels)


def test_a_failing_row_is_scored_zero_and_listed_never_dropped(tokenizer, engine, tmp_path):
    failing = "What was the imperial capital of Japan for a thousand years?"
    erroring = "Which river flows north through Egypt?"
    policy = ScriptedPolicy(tokenizer, fail=[failing], error=[erroring])
    result = evaluate(policy, {"toy": qa_rows()}, engine, tokenizer=tokenizer, batch_size=4, progress=False)
    assert result.datasets["toy"]["n"] == 5 and result.datasets["toy"]["errors"] == 2
    rows = {r["question"]: r for r in result.predictions}
    assert "policy backend down" in rows[failing]["error"] and rows[failing]["f1"] == 0.0
    assert rows[erroring]["error"] and rows[erroring]["f1"] == 0.0
    assert rows["Which city is the third largest of France?"]["exact_match"] == 1.0  # its batch-mates still count
    report = write_evaluation(result, tmp_path).read_text()
    assert "2 rows failed" in report and "q2" in report


def test_engines_side_by_side_and_outputs_written(tokenizer, engine, tmp_path):
    moon = [{"title": "Moon", "text": "No city of France is on the Moon."}, {"title": "Sun", "text": "A star."}]
    nothing = BM25Engine.from_corpus(moon, top_k=2)
    result = evaluate(
        ScriptedPolicy(tokenizer),
        {"toy": qa_rows()},
        {"bm25": engine, "moon-only": nothing},
        tokenizer=tokenizer,
        progress=False,
    )
    assert list(result.engines) == ["bm25", "moon-only"]
    assert result.engines["moon-only"]["overall"]["n"] == 5
    assert result.predictions[5]["documents"][0][0]["title"] == "Moon"
    write_evaluation(result, tmp_path)
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["datasets"]["toy"]["n"] == 5 and set(payload["engines"]) == {"bm25", "moon-only"}
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 10 and {json.loads(line)["engine"] for line in lines} == {"bm25", "moon-only"}
    assert (tmp_path / "scores.png").stat().st_size > 1000
    assert "| moon-only | toy | 5 |" in (tmp_path / "report.md").read_text()


def test_a_real_model_and_a_lora_adapter_folder(tokenizer, engine, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "base"
    make_tiny_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    adapter = tmp_path / "adapter"
    model = get_peft_model(make_tiny_model(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.peft_config["default"].base_model_name_or_path = str(base)
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    result = evaluate(str(adapter), {"toy": qa_rows()}, engine, max_completion_length=24, batch_size=3, progress=False)
    assert result.datasets["toy"]["n"] == 5 and result.datasets["toy"]["errors"] == 0
    assert all(0 < row["mean_turns"] <= 3 for row in result.predictions)


def test_bad_input_fails_before_any_model_loads(tmp_path, engine):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no rows"):
        evaluate("no-such-model-is-loaded", [str(empty)], engine, progress=False)
    nogold = tmp_path / "nogold.jsonl"
    nogold.write_text(json.dumps({"question": "q?", "golden_answers": []}) + "\n")
    with pytest.raises(ValueError, match="no gold answer"):
        evaluate("no-such-model-is-loaded", [str(nogold)], engine, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(str(tmp_path / "missing-model"), {"toy": qa_rows()}, engine, progress=False)
    with pytest.raises(ValueError, match="needs an engine"):
        evaluate(None, {"toy": qa_rows()}, None, progress=False)
    with pytest.raises(ValueError, match="--datasets is required"):
        check_eval_args(EvalArguments())
    with pytest.raises(ValueError, match="--engine must be one of"):
        eval_main(["--datasets", str(nogold), "--engine", "bm25,google"])


def test_summarize_averages_and_counts_errors():
    rows = [{"f1": 1.0, "exact_match": 1.0, "error": None}, {"f1": 0.0, "exact_match": 0.0, "error": "boom"}]
    summary = summarize(rows, seconds=4.0)
    assert summary["f1"] == 0.5 and summary["errors"] == 1 and summary["seconds_per_question"] == 2.0
    assert summary["mean_searches"] is None  # not measured, not invented


def test_cli_on_the_shared_qa_samples_with_a_real_bm25_engine(shared_data, tiny_model_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in PASSAGE_ROWS))
    qa = shared_data / "qa"
    out = tmp_path / "eval"
    code = eval_main(
        [
            "--model", str(tiny_model_dir),
            "--datasets", f"{qa / 'nq.sample.jsonl'},{qa / 'musique.verl-format.sample.parquet'}",
            "--engine", "bm25",
            "--corpus", str(corpus),
            "--search_top_k", "2",
            "--limit", "3",
            "--batch_size", "2",
            "--max_completion_length", "24",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    payload = json.loads((out / "results.json").read_text())
    assert {name: s["n"] for name, s in payload["datasets"].items()} == {
        "nq": 3,
        "bdsaglam/musique": 3,
    }  # named by data_source
    assert payload["overall"]["n"] == 6 and payload["config"]["engine_settings"]["corpus"] == str(corpus)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(row["id"] for row in rows) and {r["engine"] for r in rows} == {"bm25"}
    assert (out / "report.md").is_file() and (out / "scores.png").is_file()


def test_heldout_evaluation_during_a_real_grpo_run(tokenizer, engine, tmp_path):
    """SearchEvalCallback scores the live policy (greedy, every row) at the start, each eval step and the end."""
    from helpers import tiny_grpo_trainer
    from zerosearch_trl.training.heldout import SearchEvalCallback
    from zerosearch_trl.training.logs import MetricsJsonlCallback

    callback = SearchEvalCallback(qa_rows(), engine, eval_steps=2, max_completion_length=12, batch_size=5)
    metrics = MetricsJsonlCallback(tmp_path / "metrics.jsonl")
    trainer = tiny_grpo_trainer(tokenizer, tmp_path, [lambda completions, **kw: [0.0] * len(completions)], [metrics],
                                max_steps=3)  # fmt: skip
    callback.attach(trainer)
    trainer.train()
    assert [step for step, _ in callback.history] == [0, 2, 3]  # start, eval_steps, the last step
    assert all(scores["n"] == 5 for _, scores in callback.history)
    logged = {row["step"]: row for row in trainer.state.log_history if "heldout/f1" in row}
    assert sorted(logged) == [2, 3]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines if "heldout/mean_turns" in row] == [2, 3]  # report_to-side callbacks see it
    assert trainer.model.training  # evaluation hands the model back in training mode
