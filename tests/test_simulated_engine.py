"""SimulatedSearchEngine: parsing, labels, retries, fallback and the leak guard.

Engine-logic tests use a scripted generator (fixed texts per call, as TRL's tests script `generate`) so that each
rule is checked deterministically; the real transformers backend is exercised on a tiny random model (which
emits garbage: the retry/fallback path) and, in the slow test, on the embedded model.
"""

import logging

import pytest

from helpers import ScriptedGenerator
from zerosearch_trl.engines.base import SearchRequest
from zerosearch_trl.engines.cache import SearchCache
from zerosearch_trl.engines.simulated import PLACEHOLDER_TEXT, SimulatedSearchEngine
from zerosearch_trl.engines.simulator_text import first_result, parse_documents
from zerosearch_trl.generation import TransformersGenerator


def user_message(prompt):
    return next(m["content"] for m in prompt if m["role"] == "user")


def docs_text(n, body="Lyon is a large city in France on the Rhone river."):
    return "\n".join(f"Doc {i} (Title: Lyon {i}) {body}" for i in range(1, n + 1))


REQUEST = SearchRequest("Lyon country", question="In which country is Lyon?", golden_answers=["France"])


@pytest.mark.parametrize(
    ("text", "titles", "texts"),
    [
        ("Doc 1 (Title: A) one two\nDoc 2 (Title: B) three", ["A", "B"], ["one two", "three"]),
        ("Doc 1: first text.\nDoc 2: second text.", ["", ""], ["first text.", "second text."]),
        ("Here are results:\n1. alpha beta\n2) gamma\n[3] delta", ["", "", ""], ["alpha beta", "gamma", "delta"]),
        ("**Document 1**: Title: X) body one\n\nDocument 2 - body two", ["X", ""], ["body one", "body two"]),
        ("Doc 1 (Title: Empty)\nDoc 2 (Title: Full) text", ["Full"], ["text"]),
        ("no numbered documents at all", [], []),
        ("(Title: Single) one unnumbered result", ["Single"], ["one unnumbered result"]),
        ("", [], []),
    ],
)
def test_parse_documents(text, titles, texts):
    documents = parse_documents(text)
    assert [d.title for d in documents] == titles
    assert [d.text for d in documents] == texts


def test_parse_documents_truncates_long_texts():
    (doc,) = parse_documents("Doc 1 " + " ".join(["word"] * 100), max_words=10)
    assert len(doc.text.split()) == 10


def test_useful_documents_are_labelled():
    generator = ScriptedGenerator([docs_text(6)])
    engine = SimulatedSearchEngine(generator, noise_prob=0.0)
    (documents,) = engine.search([REQUEST])
    assert len(documents) == 5
    assert {d.meta["label"] for d in documents} == {"useful"}
    assert all(d.meta["engine"] == "simulated" and d.meta["contains_answer"] for d in documents)
    prompt = user_message(generator.calls[0][0])
    assert "In which country is Lyon?" in prompt and '"France"' in prompt and 'query "Lyon country"' in prompt
    assert engine.stats.as_dict()["useful_answer_rate"] == 1.0


def test_malformed_output_is_retried_then_accepted():
    generator = ScriptedGenerator(["garbage", docs_text(2), docs_text(5)])
    engine = SimulatedSearchEngine(generator, max_retries=2, retry_backoff=0)
    (documents,) = engine.search([REQUEST])
    assert len(documents) == 5 and not any(d.meta.get("fallback") for d in documents)
    assert len(generator.calls) == 3 and engine.stats.retries == 2 and engine.stats.fallbacks == 0


def test_fallback_after_bounded_retries_is_logged(caplog):
    generator = ScriptedGenerator(lambda prompts: [docs_text(2)] * len(prompts))
    engine = SimulatedSearchEngine(generator, max_retries=1, retry_backoff=0)
    with caplog.at_level(logging.WARNING):
        (documents,) = engine.search([REQUEST])
    assert len(generator.calls) == 2  # one try + one retry, never more
    assert len(documents) == 5
    # The two distinct documents are kept (a repeat is not a new result); placeholders fill the rest.
    assert [d.text for d in documents[2:]] == [PLACEHOLDER_TEXT] * 3
    assert all(d.meta["fallback"] and "2 attempts" in d.meta["shortfall"] for d in documents)
    assert engine.stats.fallbacks == 1
    assert "fell back" in caplog.text and "Lyon country" in caplog.text


def test_backend_exception_never_reaches_the_caller():
    class Exploding:
        name = "exploding"

        def generate(self, prompts, params):
            raise RuntimeError("CUDA out of memory")

    engine = SimulatedSearchEngine(Exploding(), max_retries=2, retry_backoff=0)
    (documents,) = engine.search([REQUEST])
    assert len(documents) == 5 and engine.stats.fallbacks == 1 and engine.stats.generations == 3


def test_retries_only_the_failed_rows_and_keeps_order():
    outputs = {
        "q0": [docs_text(5, "zero zero")],
        "q1": ["junk", docs_text(5, "one one")],
        "q2": [docs_text(5, "two two")],
    }

    def script(prompts):
        return [outputs[user_message(p).split('"')[1]].pop(0) for p in prompts]

    generator = ScriptedGenerator(script)
    engine = SimulatedSearchEngine(generator, retry_backoff=0)
    results = engine.search([SearchRequest(f"q{i}") for i in range(3)])
    assert [r[0].text for r in results] == ["zero zero", "one one", "two two"]
    assert [len(c) for c in generator.calls] == [3, 1]


def test_per_document_mode_generates_one_result_per_missing_slot():
    results = iter(
        [
            "(Title: A) first.",
            "junk",
            "(Title: C) third.",
            "(Title: D) fourth.",
            "(Title: E) fifth.",
            "(Title: B) second.",
        ]
    )
    generator = ScriptedGenerator(lambda prompts: [next(results) for _ in prompts])
    engine = SimulatedSearchEngine(generator, per_document=True, retry_backoff=0)
    (documents,) = engine.search([REQUEST])
    assert [d.title for d in documents] == ["A", "C", "D", "E", "B"]
    assert [len(c) for c in generator.calls] == [5, 1]  # only the failed slot is asked again
    assert generator.calls[0][0][-1] == {"role": "assistant", "content": "(Title:"}
    assert "one search result" in user_message(generator.calls[0][0])


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("(Title: A)\n\nBody of A.\n\nMore results:\n1. other", "(Title: A)\n\nBody of A."),
        ("(Title: A) Body of A.\n \n(Title: B) body of B", "(Title: A) Body of A."),
        ("(Title: A)\n\n", "(Title: A)\n\n"),  # nothing after the title: left whole, parsed to no document
        ("(Title: A) one line\nanother line", "(Title: A) one line\nanother line"),
    ],
)
def test_first_result_cuts_at_the_first_blank_line_after_a_body(text, first):
    assert first_result(text) == first


def test_per_document_mode_reads_a_body_after_a_blank_line_and_cuts_what_runs_on():
    # The embedded model often closes the title, leaves a blank line, then writes the body: a stop at the blank
    # line used to throw that document away and cost a retry.
    generator = ScriptedGenerator(
        lambda prompts: [" A)\n\nLyon is in France.\n\nHere are more:\n1. Paris"] * len(prompts)
    )
    engine = SimulatedSearchEngine(generator, top_k=1, per_document=True, retry_backoff=0)
    (documents,) = engine.search([REQUEST])
    assert [(d.title, d.text) for d in documents] == [("A", "Lyon is in France.")]
    assert engine.stats.retries == 0 and engine.stats.fallbacks == 0
    assert engine.params.stop == ()


def test_noisy_leak_is_regenerated():
    leak, clean = docs_text(5), docs_text(5, "Lyon has a famous festival of lights every December.")
    generator = ScriptedGenerator([leak, clean])
    engine = SimulatedSearchEngine(generator, noise_prob=1.0, retry_backoff=0)
    (documents,) = engine.search([REQUEST])
    assert {d.meta["label"] for d in documents} == {"noisy"}
    assert not any(d.meta["contains_answer"] for d in documents)
    assert engine.stats.leaks_detected == 5 and engine.stats.noisy_fraction == 1.0
    # A prompt-only simulator's noisy prompt does not show the answer.
    assert "France" not in user_message(generator.calls[0][0])


def test_noisy_leak_is_redacted_when_asked_or_when_retries_run_out():
    for guard, script in [("redact", [docs_text(5)]), ("regenerate", [docs_text(5)] * 3)]:
        engine = SimulatedSearchEngine(ScriptedGenerator(script), noise_prob=1.0, leak_guard=guard, retry_backoff=0)
        (documents,) = engine.search([REQUEST])
        assert all("France" not in d.text and "[...]" in d.text for d in documents), guard
        assert all(d.meta["redacted"] and d.meta["contains_answer"] is False for d in documents)
        assert engine.stats.leaks_redacted == 5


def test_leak_guard_off_keeps_leaks_and_finetuned_format_shows_answer():
    generator = ScriptedGenerator([docs_text(5)])
    engine = SimulatedSearchEngine(generator, noise_prob=1.0, leak_guard="off", prompt_format="finetuned")
    (documents,) = engine.search([REQUEST])
    assert all(d.meta["contains_answer"] for d in documents)
    assert "France" in user_message(generator.calls[0][0])


def test_noise_draw_is_per_request_and_seeded():
    requests = [SearchRequest(f"query {i}") for i in range(2000)]
    engine = SimulatedSearchEngine(ScriptedGenerator([]), noise_prob=0.3, seed=1)
    modes = engine.draw_modes(requests)
    assert 0.26 < modes.count("noisy") / 2000 < 0.34
    again = SimulatedSearchEngine(ScriptedGenerator([]), noise_prob=0.3, seed=1)
    assert again.draw_modes(requests) == modes


class SeedRecorder(ScriptedGenerator):
    """A backend that samples per prompt (``per_prompt_seeds``): records the seed each prompt came with."""

    per_prompt_seeds = True

    def __init__(self, script):
        super().__init__(script)
        self.seeds = {}

    def generate(self, prompts, params, seeds=None):
        for prompt, seed in zip(prompts, seeds or [None] * len(prompts)):
            user = next(m["content"] for m in prompt if m["role"] == "user")
            self.seeds.setdefault(user, []).append(seed)
        return super().generate(prompts, params)


def keyed_requests(n):
    return [SearchRequest(f"query {i}", draw_key=f"{i}|0") for i in range(n)]


def test_a_keyed_request_generates_with_seeds_of_its_own_whatever_its_batch():
    texts = lambda prompts: [docs_text(5) for _ in prompts]  # noqa: E731
    together, alone = SeedRecorder(texts), SeedRecorder(texts)
    SimulatedSearchEngine(together, seed=3, prompt_format="finetuned").search(keyed_requests(4))
    engine = SimulatedSearchEngine(alone, seed=3, prompt_format="finetuned")
    for request in reversed(keyed_requests(4)):
        engine.search([request])
    assert together.seeds == alone.seeds and len(together.seeds) == 4
    seeds = [seed for values in together.seeds.values() for seed in values]
    assert None not in seeds and len(set(seeds)) == 4  # one per request, each its own
    engine.reseed(step=1)
    alone.seeds.clear()
    engine.search(keyed_requests(1))
    assert next(iter(alone.seeds.values()))[0] not in seeds  # another step, other documents


def test_retries_and_document_slots_get_seeds_apart_and_unkeyed_requests_none():
    calls = []

    def script(prompts):  # the first attempt writes nothing usable; then each slot gets a document of its own
        calls.append(len(prompts))
        if len(calls) == 1:
            return ["junk"] * len(prompts)
        return [f"(Title: Lyon {len(calls)}-{i}) Lyon is a large city in France on the Rhone river." for i in range(2)]

    recorder = SeedRecorder(script)
    SimulatedSearchEngine(recorder, top_k=2, seed=0, per_document=True, retry_backoff=0).search(keyed_requests(1))
    (seeds,) = recorder.seeds.values()
    assert calls == [2, 2] and len(set(seeds)) == 4  # 2 slots x 2 attempts, each its own seed
    for engine_seed, requests in ((0, [SearchRequest("no key")]), (None, keyed_requests(1))):
        plain = SeedRecorder(lambda prompts: [docs_text(5)] * len(prompts))
        SimulatedSearchEngine(plain, seed=engine_seed).search(requests)
        assert [s for v in plain.seeds.values() for s in v] == [None]  # unkeyed, or unseeded: no seed of its own
    # A backend without per-prompt seeds is called as before (its generate takes no seeds argument).
    SimulatedSearchEngine(ScriptedGenerator(lambda p: [docs_text(5)] * len(p)), seed=0).search(keyed_requests(2))


def test_cache_serves_repeats_per_mode():
    generator = ScriptedGenerator(lambda prompts: [docs_text(5)] * len(prompts))
    engine = SimulatedSearchEngine(generator, cache=SearchCache(), noise_prob=0.0, leak_guard="off")
    engine.search([REQUEST])
    engine.search([REQUEST])
    assert len(generator.calls) == 1 and engine.cache.hits == 1
    engine.search([REQUEST], modes=["noisy"])  # another mode is another key
    assert len(generator.calls) == 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"top_k": 0}, "top_k"),
        ({"noise_prob": 1.5}, "noise_prob"),
        ({"noise_prob": -0.1}, "noise_prob"),
        ({"leak_guard": "maybe"}, "leak_guard"),
        ({"prompt_format": "chat"}, "prompt_format"),
        ({"temperature": -1}, "temperature"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_bad_configuration_names_the_value(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SimulatedSearchEngine(ScriptedGenerator([]), **kwargs)


def test_noise_prob_setter_validates():
    engine = SimulatedSearchEngine(ScriptedGenerator([]))
    engine.noise_prob = 0.5
    with pytest.raises(ValueError, match="noise_prob"):
        engine.noise_prob = 2


def test_tiny_model_garbage_goes_through_retries_to_fallback(tiny_model, tokenizer):
    generator = TransformersGenerator(tiny_model, tokenizer)
    engine = SimulatedSearchEngine(generator, max_new_tokens=12, max_retries=1, retry_backoff=0, seed=0)
    results = engine.search([REQUEST, SearchRequest("another query")])
    assert [len(r) for r in results] == [5, 5]
    assert engine.stats.generations == 4 and engine.stats.fallbacks == 2
    assert all(d.meta["label"] == "useful" and d.meta["fallback"] for r in results for d in r)


@pytest.mark.slow
def test_embedded_model_writes_documents(default_model_dir):
    from zerosearch_trl.models import load_default_model

    model, tokenizer = load_default_model()
    engine = SimulatedSearchEngine(TransformersGenerator(model, tokenizer), per_document=True, max_retries=1, seed=0)
    requests = [REQUEST, SearchRequest("Eiffel Tower height", "How tall is the Eiffel Tower?", ["330 metres"])]
    results = engine.search(requests, modes=["useful", "noisy"])
    assert [len(r) for r in results] == [5, 5]
    assert [{d.meta["label"] for d in r} for r in results] == [{"useful"}, {"noisy"}]
    written = [d for r in results for d in r if not d.meta.get("placeholder")]
    # The 135M model follows the one-document format often enough that most slots hold generated text.
    assert len(written) >= 5, [d.text for r in results for d in r]
    assert engine.stats.generations <= 2 * 5 * 2  # bounded: top_k slots, one retry each at most


def test_redaction_that_misses_a_normalised_leak_falls_back_to_a_placeholder():
    request = SearchRequest("band", question="Which band?", golden_answers=["The Beatles"])
    text = "\n".join(f"Doc {i} (Title: Band {i}) Beatles were a band from Liverpool number {i}." for i in range(1, 6))
    engine = SimulatedSearchEngine(ScriptedGenerator([text]), noise_prob=1.0, leak_guard="redact")
    (documents,) = engine.search([request])
    assert not any(d.meta["contains_answer"] for d in documents)
    assert all(d.meta["placeholder"] for d in documents)


def test_counters_are_exact_under_threads():
    import threading

    generator = ScriptedGenerator(lambda prompts: [docs_text(5)] * len(prompts))
    engine = SimulatedSearchEngine(generator, noise_prob=0.5, leak_guard="off", seed=0)
    threads = [threading.Thread(target=lambda: [engine.search([REQUEST]) for _ in range(50)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.stats.requests == 200 and engine.stats.generations == 200
