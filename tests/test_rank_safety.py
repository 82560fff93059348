"""Every rank, every parallelism (#21): what a single process can show of it.

The two-process runs (gloo) are in ``test_distributed.py``; here, the pieces: the engine's draws per step and per
process, per-step metrics, the GRPOConfig flags the rollout honours or refuses, and loading a simulator outside
DeepSpeed ZeRO-3's init (DeepSpeed does not install here: its config is a stand-in with the one method
transformers asks it).
"""

from __future__ import annotations

import pytest

from helpers import ScriptedGenerator, make_tiny_model
from test_rollout import RecordingEngine, make_trainer, qa_dataset, scripted_generate
from zerosearch_trl.engines.base import RequestDraws, SearchRequest, reseed_engine
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.hybrid import HybridEngine
from zerosearch_trl.engines.simulated import SimulatedSearchEngine
from zerosearch_trl.rollout import make_search_rollout
from zerosearch_trl.rollout.policy import check_generation_flags

PLAIN = [SearchRequest(f"query {i}") for i in range(64)]


def simulator(seed=0):
    return SimulatedSearchEngine(ScriptedGenerator(lambda p: [""] * len(p)), noise_prob=0.5, seed=seed)


def test_draws_differ_across_processes_and_repeat_after_a_resume():
    engine = simulator()
    modes = {}
    for rank in (0, 1):
        engine.reseed(step=7, rank=rank)
        modes[rank] = engine.draw_modes(PLAIN)
    assert modes[0] != modes[1]  # with one engine_seed for all processes, every process drew the same sequence
    resumed = simulator()
    resumed.reseed(step=7, rank=1)  # a fresh process resumed at step 7
    assert resumed.draw_modes(PLAIN) == modes[1]
    unseeded = SimulatedSearchEngine(ScriptedGenerator(lambda p: [""] * len(p)), noise_prob=0.5, seed=None)
    unseeded.reseed(step=7, rank=1)
    assert unseeded.seed is None  # no seed: the draws stay unseeded


def test_a_hybrid_reseeds_its_own_draw_and_its_simulator():
    real = BM25Engine.from_corpus([{"title": "Lyon", "text": "Lyon is in France."}], top_k=5)
    one, two = HybridEngine(real, simulator(), seed=3), HybridEngine(real, simulator(), seed=3)
    for engine in (one, two):
        engine.reseed(step=2, rank=1)
    assert one._draws.uniforms(PLAIN) == two._draws.uniforms(PLAIN)
    assert one.simulated.draw_modes(PLAIN) == two.simulated.draw_modes(PLAIN)


def keyed(n, step=0):
    return [SearchRequest(f"query {i}", draw_key=f"{i}|{step}") for i in range(n)]


def test_a_keyed_search_draws_the_same_whatever_its_batch_and_its_place_in_it():
    engine = simulator()
    engine.reseed(step=4, rank=1)
    together = engine.draw_modes(keyed(64))
    engine.reseed(step=4, rank=1)
    one_by_one_backwards = [engine.draw_modes([request])[0] for request in reversed(keyed(64))][::-1]
    assert one_by_one_backwards == together
    assert 16 < together.count("noisy") < 48  # p = 0.5
    engine.reseed(step=5, rank=1)
    assert engine.draw_modes(keyed(64)) != together  # a new step draws anew
    engine.reseed(step=4, rank=0)
    assert engine.draw_modes(keyed(64)) != together  # and so does another process
    # Without keys the draws come from the step's stream, in request order: backwards, they differ.
    engine.reseed(step=4, rank=1)
    stream = engine.draw_modes(PLAIN)
    engine.reseed(step=4, rank=1)
    assert [engine.draw_modes([request])[0] for request in reversed(PLAIN)][::-1] != stream


def test_a_hybrids_real_or_simulated_draw_is_apart_from_its_simulators_noise_draw():
    # Both seeded with one engine_seed, as the factory builds them: keyed draws must not coincide.
    draws = {purpose: RequestDraws(0, purpose).uniforms(keyed(256)) for purpose in ("engine", "noise")}
    agree = sum((a < 0.5) == (b < 0.5) for a, b in zip(draws["engine"], draws["noise"]))
    assert 96 < agree < 160  # independent: about half agree (identical draws would all agree)
    assert RequestDraws(None, "noise").uniforms(keyed(4)) != RequestDraws(None, "noise").uniforms(keyed(4))


class ReseedRecorder(RecordingEngine):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.reseeds = []

    def reseed(self, *, step, rank=0, call=0):
        self.reseeds.append((step, rank, call))
        super().reseed(step=step, rank=rank, call=call)


def test_the_rollout_reseeds_the_engine_at_each_step_with_its_process(tokenizer):
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    dataset = qa_dataset(["Where is Alpha?"])
    engine = ReseedRecorder(seed=0)
    rollout = make_search_rollout(engine)
    trainer = make_trainer(model, tokenizer, dataset, rollout, 400)
    trainer.state.global_step = 5
    model.train()  # as during trainer.train()
    rollout(list(dataset["prompt"]), trainer)
    assert engine.reseeds == [(5, 0, 0)]
    rollout(list(dataset["prompt"]), trainer)  # a second generation within step 5 (steps_per_generation < GA)
    model.eval()  # TRL's evaluation at step 5: its batches count apart from training's
    rollout(list(dataset["prompt"]), trainer)
    rollout(list(dataset["prompt"]), trainer)
    model.train()
    trainer.state.global_step = 6
    rollout(list(dataset["prompt"]), trainer)
    assert engine.reseeds == [(5, 0, 0), (5, 0, 1), (5, 0, "eval0"), (5, 0, "eval1"), (6, 0, 0)]
    engine.noise_prob = 0.5
    engine.reseed(step=5, rank=0, call=0)
    first = engine.draw_modes(PLAIN)
    engine.reseed(step=5, rank=0, call=1)
    assert engine.draw_modes(PLAIN) != first  # the second generation draws anew


def test_an_engine_whose_reseed_takes_no_call_is_still_reseeded():
    class OldStyle:  # a user's engine written for reseed(*, step, rank)
        def __init__(self):
            self.reseeds = []

        def reseed(self, *, step, rank=0):
            self.reseeds.append((step, rank))

    engine = OldStyle()
    reseed_engine(engine, step=4, rank=1, call=2)
    hybrid = HybridEngine(simulator(), simulator(), seed=0)
    hybrid.simulated = engine  # a hybrid forwards to its simulated part the same way
    hybrid.reseed(step=5, rank=0, call=1)
    assert engine.reseeds == [(4, 1), (5, 0)]


def test_engine_failures_are_logged_per_step_not_as_a_running_total(tokenizer):
    class Broken:
        name, top_k = "broken", 5

        def search(self, requests):
            raise ConnectionError("index server down")

    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    dataset = qa_dataset(["Where is Alpha?"])
    rollout = make_search_rollout(Broken())
    trainer = make_trainer(model, tokenizer, dataset, rollout, 400)
    model.train()
    for _ in range(3):
        rollout(list(dataset["prompt"]), trainer)
    assert trainer._metrics["train"]["search/engine_failures"] == [1.0, 1.0, 1.0]
    assert rollout.engine_failures == 3  # the running total stays readable on the rollout


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("generation_kwargs", {"do_sample": False}),
        ("cache_implementation", "static"),
        ("use_transformers_paged", True),
        ("ds3_gather_for_generation", False),
    ],
)
def test_generation_flags_the_rollout_would_ignore_are_refused(tokenizer, flag, value):
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    dataset = qa_dataset(["Where is Alpha?"])
    rollout = make_search_rollout(RecordingEngine())
    trainer = make_trainer(model, tokenizer, dataset, rollout, 400)
    setattr(trainer.args, flag, value)
    with pytest.raises(ValueError, match=f"does not honour {flag}"):
        rollout(list(dataset["prompt"]), trainer)
    with pytest.raises(ValueError, match=flag):
        check_generation_flags(trainer.args)  # what zerosearch-trl train runs before any model loads


def test_min_p_and_chat_template_kwargs_are_honoured(tokenizer):
    model = make_tiny_model(tokenizer)
    scripted = scripted_generate(tokenizer)
    seen = {}

    def generate(*args, **kwargs):
        seen.update(kwargs)
        return scripted(*args, **kwargs)

    model.generate = generate
    dataset = qa_dataset(["Where is Beta?"])
    rollout = make_search_rollout(RecordingEngine())
    trainer = make_trainer(model, tokenizer, dataset, rollout, 400)
    trainer.args.min_p = 0.1
    trainer.args.chat_template_kwargs = {"marker": "KWARG-REACHED"}
    template = tokenizer.chat_template
    tokenizer.chat_template = template + "{{ marker }}"  # after the generation prompt, before the prefill
    try:
        out = rollout(list(dataset["prompt"]), trainer)
    finally:
        tokenizer.chat_template = template
    assert seen["min_p"] == 0.1
    assert "KWARG-REACHED" in tokenizer.decode(out["prompt_ids"][0])


class StandInZero3Config:
    """What transformers asks of DeepSpeed's config to decide on ZeRO-3 init (DeepSpeed does not install here)."""

    def is_zero3(self):
        return True


def test_the_simulator_loads_whole_outside_zero3_init(tiny_model_dir):
    from transformers.integrations import deepspeed as hf_deepspeed
    from transformers.integrations import is_deepspeed_zero3_enabled

    from zerosearch_trl.generation.factory import make_generator

    config = StandInZero3Config()
    hf_deepspeed.set_hf_deepspeed_config(config)
    try:
        assert is_deepspeed_zero3_enabled()
        generator = make_generator("transformers", model=str(tiny_model_dir))
        assert is_deepspeed_zero3_enabled()  # restored for the policy, which ZeRO-3 does shard
    finally:
        hf_deepspeed.unset_hf_deepspeed_config()
    assert all(p.numel() > 0 for p in generator.model.parameters())  # whole, not partitioned
