"""BM25Engine: a real bm25s index over a corpus written here, and over the shared Wikipedia corpus."""

import collections
import json

import datasets
import pytest

from helpers import PASSAGE_ROWS
from zerosearch_trl.engines.base import SearchRequest
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.corpus import NO_RESULTS_TEXT, CorpusError, load_passages
from zerosearch_trl.engines.simulated import SimulatedSearchEngine

ROWS = PASSAGE_ROWS
DISTINCTIVE = {
    "third largest city of France": "lyon",
    "imperial capital Japan": "kyoto",
    "river flowing through Egypt": "nile",
    "who composed the Brandenburg Concertos": "bach",
    "Nobel prize radioactivity": "curie",
    "highest mountain Himalayas": "everest",
    "programming language Guido": "python",
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def corpus_file(tmp_path):
    return write_jsonl(tmp_path / "corpus.jsonl", ROWS)


def top1_ids(engine, queries):
    return [docs[0].meta["id"] for docs in engine.search([SearchRequest(q) for q in queries])]


def test_distinctive_queries_find_their_passage_first_in_one_batch(corpus_file):
    engine = BM25Engine.from_corpus(corpus_file, top_k=3)
    assert len(engine) == len(ROWS)
    assert top1_ids(engine, list(DISTINCTIVE)) == list(DISTINCTIVE.values())
    (documents,) = engine.search([SearchRequest("capital of Japan", golden_answers=["Japan"])])
    best = documents[0]
    assert (best.title, best.meta["engine"], best.meta["label"]) == ("Kyoto", "bm25", None)
    assert best.meta["contains_answer"] is True and best.meta["score"] > 0
    assert [d.meta["score"] for d in documents] == sorted((d.meta["score"] for d in documents), reverse=True)
    assert all(d.meta["contains_answer"] is False for d in documents[1:])
    assert engine.search([SearchRequest("Lyon")])[0][0].meta["contains_answer"] is None  # no gold answers


def test_title_is_searchable(corpus_file):
    engine = BM25Engine.from_corpus(corpus_file, top_k=1)
    assert top1_ids(engine, ["Johann Sebastian"]) == ["bach"]


def test_save_load_round_trip_gives_identical_results(corpus_file, tmp_path):
    engine = BM25Engine.from_corpus(corpus_file, top_k=4)
    folder = engine.save(tmp_path / "index")
    assert BM25Engine.is_index(folder) and not BM25Engine.is_index(tmp_path)
    loaded = BM25Engine.load(folder, top_k=4)
    requests = [SearchRequest(q, golden_answers=["France"]) for q in [*DISTINCTIVE, "city sea", "the"]]
    assert [[(d.title, d.text, d.meta) for d in docs] for docs in loaded.search(requests)] == [
        [(d.title, d.text, d.meta) for d in docs] for docs in engine.search(requests)
    ]
    assert loaded.fingerprint == engine.fingerprint
    assert BM25Engine.load(folder, top_k=4, mmap=True).search(requests[:1])[0][0].meta["id"] == "lyon"


def test_contents_rows_and_datasets_are_read(tmp_path):
    contents = [{"id": r["id"], "contents": f'"{r["title"]}"\n{r["text"]}'} for r in ROWS]
    from_contents = BM25Engine.from_corpus(write_jsonl(tmp_path / "c.jsonl", contents), top_k=1)
    ((doc,),) = from_contents.search([SearchRequest("Brandenburg Concertos")])
    assert (doc.title, doc.text) == ("Johann Sebastian Bach", ROWS[3]["text"])
    from_dataset = BM25Engine.from_corpus(datasets.Dataset.from_list(ROWS), top_k=1)
    assert top1_ids(from_dataset, list(DISTINCTIVE)) == list(DISTINCTIVE.values())
    assert from_dataset.fingerprint == BM25Engine.from_corpus(ROWS, top_k=1).fingerprint
    assert from_dataset.fingerprint != BM25Engine.from_corpus(ROWS[:-1], top_k=1).fingerprint


def test_no_match_and_small_corpus_shortfalls(corpus_file):
    engine = BM25Engine.from_corpus(corpus_file, top_k=5)
    nothing, one, stopwords_only = engine.search(
        [SearchRequest("zyzzyva"), SearchRequest("Guido"), SearchRequest("the of")]
    )
    for result in (nothing, stopwords_only):
        assert len(result) == 1 and result[0].text == NO_RESULTS_TEXT and result[0].meta["placeholder"]
        assert "no passage" in result[0].meta["shortfall"]
    assert len(one) == 1 and one[0].meta["id"] == "python" and "top_k (5)" in one[0].meta["shortfall"]
    small = BM25Engine.from_corpus(ROWS[:2], top_k=5)  # top_k larger than the corpus
    (both,) = small.search([SearchRequest("Lyon Kyoto")])
    assert len(both) == 2 and "holds only 2" in both[0].meta["shortfall"]
    assert engine.search([]) == []


def test_bad_corpora_fail_early_and_name_the_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        BM25Engine.from_corpus(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"id": "x", "text": "cut off\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl, line 3: not valid JSON"):
        BM25Engine.from_corpus(bad)
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"id": "x", "body": "no text"}) + "\n")
    with pytest.raises(CorpusError, match=r"line 2: a passage needs a 'text'.*\['body', 'id'\]"):
        BM25Engine.from_corpus(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(CorpusError, match="line 1: expected a JSON object, got list"):
        BM25Engine.from_corpus(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(CorpusError, match="no passages"):
        BM25Engine.from_corpus(empty)
    with pytest.raises(CorpusError, match="no passages"):
        BM25Engine.from_corpus([])
    with pytest.raises(CorpusError, match="row 1"):
        load_passages([ROWS[0], {"title": "only a title"}])
    with pytest.raises(CorpusError, match="is a folder"):
        BM25Engine.from_corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no BM25 index"):
        BM25Engine.load(tmp_path)
    with pytest.raises(ValueError, match="top_k"):
        BM25Engine.from_corpus(ROWS, top_k=0)


def test_not_mistaken_for_a_simulator():
    # The curriculum and the cache look for draw_modes/noise_prob to recognise a simulator.
    engine = BM25Engine.from_corpus(ROWS)
    assert not hasattr(engine, "noise_prob") and not hasattr(engine, "draw_modes")
    assert not isinstance(engine, SimulatedSearchEngine)


def is_yes_no(answers):
    return answers[0].strip().lower() in ("yes", "no")


def test_shared_wikipedia_corpus_answers_a_share_of_its_questions(shared_data, tmp_path):
    corpus = shared_data / "corpus"
    engine = BM25Engine.from_corpus(corpus / "wiki-passages.jsonl", top_k=5)
    assert len(engine) > 27_000
    questions = collections.defaultdict(list)
    for line in open(corpus / "corpus-qa.jsonl", encoding="utf-8"):
        row = json.loads(line)
        if not is_yes_no(row["golden_answers"]) and len(questions[row["data_source"]]) < 100:
            questions[row["data_source"]].append(SearchRequest(row["question"], golden_answers=row["golden_answers"]))
    recall = {}
    for source, requests in questions.items():
        results = engine.search(requests)
        recall[source] = sum(any(d.meta["contains_answer"] for d in docs) for docs in results) / len(requests)
    # Measured on these first 100 questions per dataset: hotpotqa 0.66, 2wiki 0.54, musique 0.20.
    assert recall["hotpotqa"] >= 0.5 and recall["2wiki"] >= 0.4 and recall["musique"] >= 0.1, recall
