"""The released ZeroSearch simulators get exactly the input they were fine-tuned on (#20, item 9).

The contract is the ZeroSearch repository's ``llm_agent/generation.py`` (commit 2d4cdca), ``search_simulate_sft``:
an OpenAI chat call with an empty system message and one user message built from the query, the question and the
FIRST gold answer, in a useful and a noisy variant, with no assistant prefill; the simulator answers ``Doc 1: ...``
lines, cut at ``Doc {top_k + 1}``. The expected prompts below are that function's text, written out by hand.
"""

from __future__ import annotations

import json

import pytest

import zerosearch_trl as zs
from helpers import JSONHandler, LoopbackServer
from zerosearch_trl.engines.base import SearchRequest
from zerosearch_trl.engines.simulated import SimulatedSearchEngine
from zerosearch_trl.prompts import simulator_messages

USEFUL = """You are the Google search engine.
Given a query, you need to generate five useful documents for the query.

The user is trying to answer the question: "Who wrote Dune?" whose answer is Frank Herbert.
Each document should contain about 30 words, and these documents should contain useful information.

Query: Dune author
Useful Output:
"""

NOISY = """You are the Google search engine.
Given a query, you need to generate five noisy documents for the query.

The user is trying to answer the question: "Who wrote Dune?" whose answer is Frank Herbert.
Each document should contain about 30 words, and these documents should contain noisy information.

Query: Dune author
Noisy Output:
"""


@pytest.mark.parametrize(("mode", "prompt"), [("useful", USEFUL), ("noisy", NOISY)])
def test_the_messages_are_the_reference_input_exactly(mode, prompt):
    messages = zs.simulator_messages(
        "Dune author",
        mode,
        question="Who wrote Dune?",
        golden_answers=["Frank Herbert", "Herbert"],  # only the first one is sent, as in the reference
        n_docs=3,  # the reference asks for "five" whatever top_k is, and cuts the answer at Doc top_k + 1
        words_per_doc=50,
        prompt_format="zerosearch",
        prefill=True,  # the released checkpoints were tuned without one: never added
    )
    assert messages == [{"role": "system", "content": ""}, {"role": "user", "content": prompt}]


class RecordingSimulator(LoopbackServer):
    """An OpenAI-compatible chat endpoint on loopback that records each request and answers like the released
    simulator: ``Doc i: text`` lines, more of them than asked."""

    def __init__(self):
        self.requests = []
        recorded = self.requests

        class Handler(JSONHandler):
            def do_GET(self):
                self.answer(200, {"object": "list", "data": [{"id": "SearchSimulation_14B", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorded.append((self.path, body))
                lines = [f"Doc {i}: Frank Herbert wrote the novel Dune, number {i}, in 1965." for i in range(1, 7)]
                content = "\n\n".join(lines)
                self.answer(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        ],
                    },
                )

        super().__init__(Handler)


def test_the_engine_sends_the_contract_and_parses_doc_lines_cut_at_top_k():
    pytest.importorskip("openai")
    server = RecordingSimulator()
    try:
        engine = SimulatedSearchEngine(
            zs.OpenAIGenerator(f"{server.url}/v1"), prompt_format="zerosearch", top_k=3, leak_guard="off"
        )
        request = SearchRequest("Dune author", question="Who wrote Dune?", golden_answers=("Frank Herbert",))
        (documents,) = engine.search([request], modes=["useful"])
    finally:
        server.close()
    ((path, body),) = [r for r in server.requests if r[0].endswith("/chat/completions")]
    assert body["messages"] == [{"role": "system", "content": ""}, {"role": "user", "content": USEFUL}]
    assert body["max_tokens"] == 600 and body["temperature"] == 0.8  # the reference's budget, the paper's temperature
    assert "continue_final_message" not in json.dumps(body)  # no prefill
    assert [d.text for d in documents] == [
        f"Frank Herbert wrote the novel Dune, number {i}, in 1965." for i in (1, 2, 3)
    ]
    assert all(d.title == "" and d.meta["label"] == "useful" and d.meta["contains_answer"] for d in documents)


def test_the_released_format_writes_all_documents_in_one_answer():
    with pytest.raises(ValueError, match="per_document"):
        SimulatedSearchEngine(
            zs.OpenAIGenerator("http://127.0.0.1:9/v1"), prompt_format="zerosearch", per_document=True
        )


def test_the_paper_recipes_drive_the_released_simulator_with_its_contract():
    from pathlib import Path

    import yaml

    recipes = Path(__file__).resolve().parents[1] / "examples" / "recipes"
    for name in ("paper_qwen2.5-3b.yaml", "paper_qwen2.5-3b_ppo.yaml", "paper_qwen2.5-3b_reinforce.yaml"):
        recipe = yaml.safe_load((recipes / name).read_text())
        assert "SearchSimulation" in recipe["simulator_model"] and recipe["prompt_format"] == "zerosearch", name


def test_simulator_messages_is_public():
    assert zs.simulator_messages is simulator_messages
