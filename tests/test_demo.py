from zerosearch_trl.answers import cover_exact_match
from zerosearch_trl.data import load_qa_dataset
from zerosearch_trl.demo import make_demo_task


def test_demo_is_seeded_and_answerable_from_its_corpus(tmp_path):
    task = make_demo_task(64, seed=7)
    again = make_demo_task(64, seed=7)
    assert task.dataset["question"] == again.dataset["question"]
    assert task.dataset["question"] != make_demo_task(64, seed=8).dataset["question"]
    assert set(task.dataset.column_names) == {"prompt", "question", "golden_answers", "data_source", "id"}
    texts = [f"{t} {x}" for t, x in zip(task.corpus["title"], task.corpus["text"])]
    for row in task.dataset:
        # Every answer is written somewhere in the corpus (two-hop answers in the second-hop passage).
        assert any(cover_exact_match(text, row["golden_answers"]) for text in texts), row


def test_demo_has_two_hop_questions_and_round_trips(tmp_path):
    task = make_demo_task(100, seed=0, two_hop_fraction=0.5)
    two_hop = [q for q in task.dataset["question"] if "organisation founded by" in q or "In which country was" in q]
    assert 30 <= len(two_hop) <= 70
    folder = task.save(tmp_path / "demo")
    reloaded = load_qa_dataset(folder / "questions.jsonl")
    assert reloaded["question"] == task.dataset["question"]
    assert reloaded["golden_answers"] == task.dataset["golden_answers"]
    assert sum(1 for _ in open(folder / "corpus.jsonl")) == len(task.corpus)
