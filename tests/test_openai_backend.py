"""OpenAIGenerator against a real OpenAI-compatible server on loopback (`transformers serve`, CPU, offline)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import FaultProxy
from zerosearch_trl.engines.base import SearchRequest
from zerosearch_trl.engines.simulated import SimulatedSearchEngine
from zerosearch_trl.generation import GenerationParams, OpenAIGenerator, ServerUnreachableError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    executable = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
    process = subprocess.Popen(
        [executable, "serve", str(folder), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError("transformers serve did not become healthy within 180 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    port = free_port()
    process = start_server(tiny_model_dir, port)
    yield process, f"http://127.0.0.1:{port}/v1"
    stop_server(process)


def test_chat_and_text_prompts_through_the_server(server):
    _, base_url = server
    generator = OpenAIGenerator(base_url, max_concurrency=4)
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(5)] + ["a raw text prompt"]
    generations = generator.generate(prompts, GenerationParams(max_new_tokens=6, temperature=0))
    assert len(generations) == 6
    assert generator.model == str(generator.client.models.list().data[0].id)  # discovered from /v1/models
    assert all(g.finish_reason in ("stop", "length") for g in generations)
    assert any(g.text for g in generations)


def test_simulated_engine_over_http_always_returns_top_k(server):
    _, base_url = server
    engine = SimulatedSearchEngine(OpenAIGenerator(base_url), max_new_tokens=8, max_retries=1, retry_backoff=0)
    results = engine.search([SearchRequest("q1", "Q1?", ["a"]), SearchRequest("q2")])
    assert [len(r) for r in results] == [5, 5]
    assert engine.stats.generations >= 2


def test_a_policy_served_over_http_is_evaluated_from_token_ids(server, tokenizer):
    """evaluate() drives a policy behind an OpenAI-compatible server (ids sent as text, the reply re-tokenised)."""
    import datasets

    from helpers import PASSAGE_ROWS
    from zerosearch_trl.engines.bm25 import BM25Engine
    from zerosearch_trl.evaluation import evaluate

    _, base_url = server
    policy = OpenAIGenerator(base_url, tokenizer=tokenizer)
    generation = policy.generate_ids([tokenizer("The capital")["input_ids"]], GenerationParams(max_new_tokens=5))[0]
    assert generation.token_ids == tokenizer(generation.text, add_special_tokens=False)["input_ids"]
    rows = datasets.Dataset.from_list(
        [{"question": f"Where is Lyon {i}?", "golden_answers": ["France"]} for i in range(3)]
    )
    before = set(threading.enumerate())
    result = evaluate(
        policy, {"toy": rows}, BM25Engine.from_corpus(PASSAGE_ROWS, top_k=2), tokenizer=tokenizer,
        max_completion_length=16, batch_size=2, progress=False,
    )  # fmt: skip
    assert result.datasets["toy"]["n"] == 3 and result.datasets["toy"]["errors"] == 0

    # Its request threads end with it: evaluating checkpoint after checkpoint leaves none behind.
    def left_behind() -> list[str]:
        return [t.name for t in set(threading.enumerate()) - before if t.name.startswith("policy")]

    deadline = time.monotonic() + 10
    while left_behind() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left_behind()
    with pytest.raises(ValueError, match="tokenizer"):
        OpenAIGenerator(base_url).generate_ids([[1, 2]], GenerationParams(max_new_tokens=2))


def test_server_down_fails_at_first_call_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    generator = OpenAIGenerator(url, model="m", max_retries=0, timeout=5)
    with pytest.raises(ServerUnreachableError, match="127.0.0.1") as error:
        generator.generate(["hi"], GenerationParams(max_new_tokens=2))
    assert "transformers serve" in str(error.value)


def test_server_dying_mid_run_costs_a_fallback_not_the_run(tiny_model_dir):
    port = free_port()
    process = start_server(tiny_model_dir, port)
    try:
        generator = OpenAIGenerator(f"http://127.0.0.1:{port}/v1", max_retries=1, timeout=10)
        engine = SimulatedSearchEngine(generator, max_new_tokens=4, max_retries=1, retry_backoff=0.01)
        assert len(engine.search([SearchRequest("before")])[0]) == 5
    finally:
        stop_server(process)
    (documents,) = engine.search([SearchRequest("after")])
    assert len(documents) == 5 and all(d.meta["fallback"] for d in documents)


def test_api_key_comes_from_the_environment_and_is_not_in_repr(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    generator = OpenAIGenerator("http://127.0.0.1:9/v1", model="m", api_key_env="MY_KEY")
    assert generator.client.api_key == "sk-secret-123"
    assert "sk-secret-123" not in repr(generator.__dict__.get("fingerprint", "")) + generator.fingerprint


def test_bad_arguments():
    with pytest.raises(ValueError, match="base_url"):
        OpenAIGenerator("localhost:8000")
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIGenerator("http://localhost:8000/v1", max_concurrency=0)


def test_credentials_in_the_url_never_reach_messages():
    generator = OpenAIGenerator("http://user:s3cret@127.0.0.1:9/v1", model="m", max_retries=0, timeout=2)
    with pytest.raises(ServerUnreachableError) as error:
        generator.generate(["hi"], GenerationParams(max_new_tokens=2))
    assert "s3cret" not in str(error.value) and "s3cret" not in generator.fingerprint


PREFILLED = [{"role": "user", "content": "Write a search result."}, {"role": "assistant", "content": "Doc 1 (Title:"}]


def test_a_server_that_refuses_vllms_fields_gets_the_plain_schema_and_prefills_still_continue(server, caplog):
    """`transformers serve` answers 422 to continue_final_message and to sampling extras (the simulator's prefilled
    prompts sent both, so every simulated search over it fell back): the generator switches to the plain schema."""
    _, url = server
    generator = OpenAIGenerator(url, max_retries=0, timeout=60)
    params = GenerationParams(max_new_tokens=4, top_k=5)
    with caplog.at_level("WARNING"):
        (prefilled,) = generator.generate([PREFILLED], params)
    assert prefilled.finish_reason != "error" and generator.plain_schema
    assert "refuses fields outside the OpenAI schema" in caplog.text and "['top_k'] are dropped" in caplog.text
    (chat,) = generator.generate([PREFILLED[:1]], params)
    assert chat.finish_reason != "error"


def test_a_seeded_simulator_sends_each_keyed_search_its_own_seed_whatever_its_batch(server):
    """The seed travels in each request's body (a recording proxy in front of the real server): a search keyed by
    its episode gets the same seed alone or in a batch, so a server that honours seeds (vLLM, SGLang) writes it
    the same documents."""
    _, url = server
    proxy = FaultProxy(url.removesuffix("/v1"))
    try:
        requests = [SearchRequest(f"query {i}", draw_key=f"{i}|0") for i in range(3)]
        seeds = []
        for batches in ([requests], [[r] for r in reversed(requests)]):
            proxy.bodies.clear()
            engine = SimulatedSearchEngine(
                OpenAIGenerator(f"{proxy.url}/v1"), seed=7, max_new_tokens=4, max_retries=0, retry_backoff=0
            )
            for batch in batches:
                engine.search(batch)
            bodies = [b for b in proxy.bodies if "seed" in b]
            seeds.append({next(q for q in ("query 0", "query 1", "query 2") if q in str(b)): b["seed"] for b in bodies})
        assert seeds[0] == seeds[1] and len(set(seeds[0].values())) == 3 and None not in seeds[0].values()
    finally:
        proxy.close()


def test_a_faulty_simulator_server_costs_fallback_documents_never_the_call(server):
    """Each fault kind between the engine and a real server (proxy on loopback): a dropped connection, an answer
    past the timeout, HTML instead of JSON, a 500. The search still returns top_k documents, flagged fallback."""
    _, url = server
    proxy = FaultProxy(url.removesuffix("/v1"), slow_seconds=3.0)
    try:
        generator = OpenAIGenerator(f"{proxy.url}/v1", max_retries=0, timeout=1.0)
        engine = SimulatedSearchEngine(generator, top_k=2, max_new_tokens=4, max_retries=1, retry_backoff=0.01)
        params = GenerationParams(max_new_tokens=4)
        assert generator.generate([PREFILLED], params)[0].finish_reason != "error"
        for mode in ("down", "slow", "garbage", "error"):
            proxy.mode = mode
            assert generator.generate([PREFILLED], params)[0].finish_reason == "error", mode
            (documents,) = engine.search([SearchRequest(f"during {mode}")])
            assert len(documents) == 2 and all(d.meta["fallback"] for d in documents), mode
            assert proxy.counts[mode] >= 1, mode
        proxy.mode = "pass"
        assert generator.generate([PREFILLED], params)[0].finish_reason != "error"
    finally:
        proxy.close()


def test_a_served_policy_plays_each_turn_as_its_own_request(server, tokenizer):
    """OpenAITurns: requests join while others are in flight, come back under their own key, and give what the
    batched path gives (transformers serve decodes greedily, so both are deterministic)."""
    from zerosearch_trl.generation.openai import OpenAITurns

    _, base_url = server
    policy = OpenAIGenerator(base_url, tokenizer=tokenizer, max_concurrency=2)
    prompts = [tokenizer(f"Question {i}: where is Lyon?")["input_ids"] for i in range(3)]
    params = GenerationParams(max_new_tokens=6, temperature=0)
    turns = OpenAITurns(policy)
    for key, ids in enumerate(prompts):
        turns.submit(key, ids, params)  # three requests, two in flight: one queued behind them
    assert not turns.idle
    finished = {}
    while not turns.idle:
        for key, generation in turns.step():
            finished[key] = generation
            if key == 0:
                turns.submit("late", prompts[0], params)  # joins while the others may still run
    batched = policy.generate_ids(prompts, params)
    assert sorted(finished, key=str) == [0, 1, 2, "late"]
    assert [finished[i].text for i in range(3)] == [g.text for g in batched]
    assert finished["late"].text == finished[0].text
    turns.submit("dropped", prompts[1], params)
    turns.reset()
    assert turns.idle and turns.step() == []
    turns.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        turns.submit("after close", prompts[0], params)
    with pytest.raises(ValueError, match="tokenizer"):
        OpenAITurns(OpenAIGenerator(base_url))


def test_a_served_policys_seeded_turns_each_carry_a_seed_of_their_own(server, tokenizer):
    """One prompt twice under one seed (a GRPO group, or an evaluation that samples a question twice): each request
    carries its own seed, so a server that honours seeds samples them apart (a recording proxy reads the bodies)."""
    from zerosearch_trl.generation.openai import OpenAITurns

    _, url = server
    proxy = FaultProxy(url.removesuffix("/v1"))
    try:
        turns = OpenAITurns(OpenAIGenerator(f"{proxy.url}/v1", tokenizer=tokenizer))
        prompt = tokenizer("Question: where is Lyon?")["input_ids"]
        for key in ("episode 0", "episode 1"):
            turns.submit(key, prompt, GenerationParams(max_new_tokens=4, temperature=1.0, seed=3))
        while not turns.idle:
            turns.step()
        turns.close()
        seeds = [body["seed"] for body in proxy.bodies if "seed" in body]
        assert len(seeds) >= 2 and len(set(seeds)) == 2 and 3 not in seeds
    finally:
        proxy.close()


def test_a_served_policy_that_cannot_be_reached_fails_its_turns_naming_the_url(tokenizer):
    """Once no request is left in flight and none was ever answered, the turns fail loudly (not as empty turns)."""
    from zerosearch_trl.generation.openai import OpenAITurns

    url = f"http://127.0.0.1:{free_port()}/v1"
    turns = OpenAITurns(OpenAIGenerator(url, tokenizer=tokenizer, max_retries=0, timeout=2))
    for key in range(2):
        turns.submit(key, [1, 2, 3], GenerationParams(max_new_tokens=2))
    with pytest.raises(ServerUnreachableError, match="127.0.0.1"):
        while not turns.idle:
            turns.step()
