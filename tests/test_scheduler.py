"""The episode scheduler and the continuous-batching generator.

The generator tests run the real embedded model (greedy, so that tokens can be compared exactly with
``TransformersGenerator``'s). The scheduler tests play the scripted policy of ``test_rollout`` through both paths:
the synchronous one (every live episode's turn in one batch) and the continuous one, where ``GenerateAsTurns``
hands finished turns back a few at a time in a shuffled order (the script drives ``model.generate``, which the real
continuous generator does not call; see ``helpers.GenerateAsTurns``).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from helpers import GenerateAsTurns, cpu_config, make_tiny_model
from test_rollout import SCRIPTS, RecordingEngine, make_trainer, qa_dataset, scripted_generate
from zerosearch_trl.generation.base import GenerationParams
from zerosearch_trl.generation.continuous import ContinuousTransformersGenerator, supports_continuous_batching
from zerosearch_trl.generation.transformers import TransformersGenerator
from zerosearch_trl.rollout import make_search_rollout, policy

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a land far away, there lived",
    "def fibonacci(n):",
    "Question: Who wrote Hamlet?\nAnswer:",
    "The three primary colours are",
]


@pytest.fixture(scope="module")
def smol():
    import zerosearch_trl as zs

    torch.manual_seed(0)
    return zs.load_default_model()


def encode(tokenizer, prompts):
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def test_continuous_generation_matches_batched_generate_greedy(smol):
    model, tokenizer = smol
    ids = encode(tokenizer, PROMPTS)
    params = GenerationParams(max_new_tokens=20, temperature=0, stop=(" the",))
    expected = TransformersGenerator(model, tokenizer).generate_ids(ids, params)
    got = ContinuousTransformersGenerator(model, tokenizer).generate_ids(ids, params)
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert [g.text for g in got] == [e.text for e in expected]
    assert [g.finish_reason for g in got] == [e.finish_reason for e in expected]
    assert {"stop", "length"} <= {g.finish_reason for g in got}  # both endings were exercised


def test_requests_join_a_running_batch_and_leave_it_as_they_finish(smol):
    model, tokenizer = smol
    ids = encode(tokenizer, PROMPTS)
    budgets = [3, 25, 8, 14, 5]
    single = TransformersGenerator(model, tokenizer)
    expected = [
        single.generate_ids([i], GenerationParams(max_new_tokens=b, temperature=0))[0] for i, b in zip(ids, budgets)
    ]
    generator = ContinuousTransformersGenerator(model, tokenizer, chunk=4)
    results, order = {}, []
    for key in (0, 1):
        generator.submit(key, ids[key], GenerationParams(max_new_tokens=budgets[key], temperature=0))
    steps = 0
    while not generator.idle or len(results) < len(ids):
        if steps == 2:  # the first two are mid-generation when the others arrive
            for key in (2, 3, 4):
                generator.submit(key, ids[key], GenerationParams(max_new_tokens=budgets[key], temperature=0))
        for key, generation in generator.step():
            results[key] = generation
            order.append(key)
        steps += 1
    assert [results[k].token_ids for k in range(len(ids))] == [e.token_ids for e in expected]
    assert order[0] == 0 and order.index(4) < order.index(1)  # the short ones left before the long one
    # Every decode step paid only for running rows: fewer row-steps than a static batch of the longest budget.
    assert generator.stats["row_steps"] < len(ids) * max(budgets)


def test_a_continued_request_reuses_its_cache_and_generates_what_a_fresh_prefill_would(smol):
    model, tokenizer = smol
    prompt = encode(tokenizer, ["Question: What is the tallest mountain on Earth?\nAnswer:"])[0]
    params = GenerationParams(max_new_tokens=12, temperature=0)
    generator = ContinuousTransformersGenerator(model, tokenizer)
    generator.submit("episode", prompt, params)
    finished = []
    while not finished:
        finished = generator.step()
    first = finished[0][1]
    observation = tokenizer(
        "\n<information> Doc 1: Everest is 8,849 m high. </information>\n", add_special_tokens=False
    )
    follow_up = prompt + first.token_ids + observation["input_ids"]
    generator.submit("episode", follow_up, params)
    results = []
    while not generator.idle:
        results += generator.step()
    fresh = ContinuousTransformersGenerator(model, tokenizer).generate_ids([follow_up], params)[0]
    assert results[0][1].token_ids == fresh.token_ids
    # The prompt and the first turn (but its newest token, never fed) came from the kept cache.
    assert generator.stats["reused_tokens"] == len(prompt) + len(first.token_ids) - 1
    generator.release("episode")
    assert not generator._kept


def test_sampling_honours_the_seed_and_the_filters(smol):
    model, tokenizer = smol
    ids = encode(tokenizer, PROMPTS[:2])
    params = GenerationParams(max_new_tokens=10, temperature=1.0, top_k=5, top_p=0.9, repetition_penalty=1.3, seed=7)
    first = ContinuousTransformersGenerator(model, tokenizer).generate_ids(ids, params)
    second = ContinuousTransformersGenerator(model, tokenizer).generate_ids(ids, params)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    greedy = ContinuousTransformersGenerator(model, tokenizer).generate_ids(ids, GenerationParams(10, temperature=0))
    assert [g.token_ids for g in first] != [g.token_ids for g in greedy]


def test_a_seeded_request_samples_alike_whatever_decodes_beside_it(smol):
    model, tokenizer = smol
    ids = encode(tokenizer, PROMPTS)
    params = GenerationParams(max_new_tokens=12, temperature=1.0, seed=11)
    together = ContinuousTransformersGenerator(model, tokenizer).generate_ids(ids, params)
    alone = [ContinuousTransformersGenerator(model, tokenizer).generate_ids([row], params)[0] for row in ids[:1]]
    late = ContinuousTransformersGenerator(model, tokenizer, max_batch=2, chunk=3)  # rows join as others leave
    for key, row in [(("generate_ids", i), row) for i, row in enumerate(ids)][::-1]:
        late.submit(key, row, params)
    finished = {}
    while not late.idle:
        finished.update(late.step())
    assert alone[0].token_ids == together[0].token_ids
    assert [finished[("generate_ids", i)].token_ids for i in range(len(ids))] == [g.token_ids for g in together]
    twice = ContinuousTransformersGenerator(model, tokenizer).generate_ids([ids[0], ids[0]], params)
    assert twice[0].token_ids != twice[1].token_ids  # one prompt twice (a GRPO group): two samples


def test_per_prompt_seeds_sample_each_prompt_alike_wherever_it_sits_in_the_batch(smol):
    """A simulator on this generator passes a seed per request: the request's documents follow its seed alone."""
    model, tokenizer = smol
    params = GenerationParams(max_new_tokens=10, temperature=1.0)
    generator = ContinuousTransformersGenerator(model, tokenizer)
    batch = generator.generate(PROMPTS[:3], params, seeds=[5, 6, 7])
    alone = [generator.generate([prompt], params, seeds=[seed])[0] for prompt, seed in zip(PROMPTS[1:3], (6, 7))]
    assert [g.token_ids for g in alone] == [g.token_ids for g in batch[1:]]
    twice = generator.generate([PROMPTS[0]] * 2, params, seeds=[9, 9])  # one seed twice: a stream each
    assert twice[0].token_ids != twice[1].token_ids
    assert twice[0].token_ids == generator.generate(PROMPTS[:1], params, seeds=[9])[0].token_ids
    with pytest.raises(ValueError, match="Got 1 seeds for 2 prompts"):
        generator.generate(PROMPTS[:2], params, seeds=[1])


def test_bad_requests_are_named(smol):
    model, tokenizer = smol
    generator = ContinuousTransformersGenerator(model, tokenizer)
    with pytest.raises(ValueError, match="no input ids"):
        generator.submit("a", [], GenerationParams())
    generator.submit("a", [1, 2], GenerationParams())
    with pytest.raises(ValueError, match="'a' is already running"):
        generator.submit("a", [1, 2], GenerationParams())
    with pytest.raises(ValueError, match="max_batch and chunk"):
        ContinuousTransformersGenerator(model, tokenizer, chunk=0)


def test_sliding_window_models_are_not_driven_continuously(tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    assert supports_continuous_batching(make_tiny_model(tokenizer, "qwen2"))
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=8,
    )  # fmt: skip
    assert not supports_continuous_batching(MistralForCausalLM(config))


# -- the scheduler, on the scripted policy ----------------------------------------------------------------------


def play_both_ways(tokenizer, questions, engine_factory=RecordingEngine, max_completion_length=400):
    """The same episodes through the synchronous and the continuous path; returns both outputs and the latter's
    turn generator."""
    outputs, made = [], []

    def spy(model, tokenizer):
        made.append(GenerateAsTurns(model, tokenizer, seed=3, per_step=1))
        return made[-1]

    for continuous in (False, True):
        model = make_tiny_model(tokenizer)
        model.generate = scripted_generate(tokenizer)
        dataset = qa_dataset(questions)
        rollout = make_search_rollout(engine_factory(), max_turns=2, continuous_batching=continuous)
        trainer = make_trainer(model, tokenizer, dataset, rollout, max_completion_length)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(policy, "ContinuousTransformersGenerator", spy)
            outputs.append(rollout(list(dataset["prompt"]), trainer))
    return outputs[0], outputs[1], made[0]


def test_the_scheduler_plays_the_same_episodes_as_the_synchronous_rollout(tokenizer):
    questions = list(SCRIPTS)
    synchronous, continuous, turns = play_both_ways(tokenizer, questions)
    for key in ("completion_ids", "env_mask", "policy_turns", "search_queries", "invalid_actions", "well_formed"):
        assert continuous[key] == synchronous[key], key
    assert continuous["prompt_ids"] == synchronous["prompt_ids"]
    # Episodes really went out of step: some episode's later turn was submitted before another's first one ended.
    first_turn_keys = [key for key, _ in turns.submitted[: len(questions)]]
    assert sorted(first_turn_keys) == list(range(len(questions)))
    later = [key for key, _ in turns.submitted[len(questions) :]]
    assert later and later != sorted(later)
    # Episodes that end at different turns: an answer at once (Beta), after two searches (Theta), truncated (Omega).
    turns_taken = {q: len(t) for q, t in zip(questions, continuous["policy_turns"])}
    assert turns_taken["Where is Beta?"] == 1 and turns_taken["Where is Theta?"] == 3
    omega = questions.index("Where is Omega?")
    assert continuous["completion_ids"][omega][-1] != tokenizer.eos_token_id  # truncated: no closing EOS


class SlowEngine(RecordingEngine):
    """Takes real time per call and records when each call ran, in which thread."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def search(self, requests, modes=None):
        start = time.monotonic()
        time.sleep(0.3)
        result = super().search(requests, modes)
        self.calls.append((start, time.monotonic(), threading.current_thread().name, len(requests)))
        return result


def test_a_slow_engine_does_not_stop_the_other_episodes(tokenizer, monkeypatch):
    engine = SlowEngine()
    steps = []
    real_step = GenerateAsTurns.step

    def timed_step(self):  # a step takes real time, as a decode chunk does
        steps.append(time.monotonic())
        time.sleep(0.06)
        return real_step(self)

    monkeypatch.setattr(GenerateAsTurns, "step", timed_step)
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    questions = ["Where is Gamma?", "Where is Eta?", "Where is Iota?", "Where is Alpha?"]
    dataset = qa_dataset(questions)
    rollout = make_search_rollout(engine, max_turns=2)
    out = rollout(list(dataset["prompt"]), make_trainer(model, tokenizer, dataset, rollout, 400))
    assert out["search_queries"][0] == ["gamma one", "gamma two"] and out["search_queries"][3] == ["alpha place"]
    assert all(thread.startswith("search") for _, _, thread, _ in engine.calls)  # off the generating thread
    # The episodes that never search kept generating while a search was at the engine.
    assert any(start < step < end for start, end, _, _ in engine.calls for step in steps)
    searches = sum(len(q) for q in out["search_queries"])
    assert sum(n for *_, n in engine.calls) == searches and len(engine.calls) <= searches


def test_a_failing_engine_answers_every_search_with_the_failure_notice_and_keeps_rows_aligned(tokenizer):
    class Flaky(RecordingEngine):
        def search(self, requests, modes=None):
            if any(r.query == "gamma two" for r in requests):
                raise ConnectionError("index server restarted")
            return super().search(requests, modes)

    synchronous, continuous, _ = play_both_ways(tokenizer, ["Where is Gamma?", "Where is Alpha?"], Flaky)
    gamma = tokenizer.decode(continuous["completion_ids"][0])
    assert gamma.count("The search failed") == 1 and "alpha" not in gamma
    assert continuous["search_queries"] == [["gamma one", "gamma two"], ["alpha place"]]
    assert all(len(c) == len(m) for c, m in zip(continuous["completion_ids"], continuous["env_mask"]))


def test_a_real_grpo_step_on_the_continuous_path(tmp_path, tokenizer, monkeypatch):
    """The default path end to end: the real continuous generator over a tiny random Llama, in a real step."""
    from trl import GRPOTrainer

    from zerosearch_trl.rewards import f1_reward

    made = []

    def spy(model, tokenizer, **kwargs):
        made.append(ContinuousTransformersGenerator(model, tokenizer, **kwargs))
        return made[-1]

    monkeypatch.setattr(policy, "ContinuousTransformersGenerator", spy)
    rollout = make_search_rollout(RecordingEngine(), max_turns=1, max_turn_tokens=24, max_observation_tokens=96)
    outputs = []

    def recording(prompts, trainer):
        outputs.append(rollout(prompts, trainer))
        return outputs[-1]

    dataset = qa_dataset(["Where is Alpha?", "Where is Beta?"])
    config = cpu_config(
        tmp_path, per_device_train_batch_size=4, num_generations=2, max_completion_length=145, max_steps=1
    )
    trainer = GRPOTrainer(
        model=make_tiny_model(tokenizer), reward_funcs=[f1_reward], args=config, train_dataset=dataset,
        processing_class=tokenizer, rollout_func=recording,
    )  # fmt: skip
    trainer.train()
    assert made and made[0].stats["decode_steps"] > 0
    out = outputs[0]
    assert all(len(c) == len(m) for c, m in zip(out["completion_ids"], out["env_mask"]))
    # A random policy writes no action: each episode got the corrective observation, generated again from its
    # kept cache, and was cut at its turn budget.
    assert all(t == 2 for t in map(len, out["policy_turns"]))
    assert made[0].stats["reused_tokens"] > 0
    assert trainer.state.global_step == 1


def test_a_rollouts_episodes_are_the_same_however_the_continuous_generator_batches_them(tokenizer, monkeypatch):
    """The rollout seeds each turn by its step, process and episode: episodes of a sampled policy do not depend on
    which rows decoded beside them, or when they were admitted."""
    completions = []
    for max_batch, chunk in ((8, 16), (1, 16), (3, 2)):

        def sized(model, tokenizer, max_batch=max_batch, chunk=chunk):
            return ContinuousTransformersGenerator(model, tokenizer, max_batch=max_batch, chunk=chunk)

        monkeypatch.setattr(policy, "ContinuousTransformersGenerator", sized)
        dataset = qa_dataset(["Where is Alpha?", "Where is Beta?"])
        rollout = make_search_rollout(RecordingEngine(), max_turns=1, max_turn_tokens=16, max_observation_tokens=96)
        trainer = make_trainer(make_tiny_model(tokenizer), tokenizer, dataset, rollout, 145, temperature=1.0)
        completions.append(rollout(list(dataset["prompt"]) * 2, trainer)["completion_ids"])
    assert completions[0] == completions[1] == completions[2]
    assert completions[0][0] != completions[0][2]  # one question twice: two different episodes


def test_the_trainer_decides_the_turn_generator_and_forcing_continuous_where_it_cannot_is_named(tokenizer):
    from contextlib import ExitStack

    from zerosearch_trl.rollout.policy import turn_generator

    model = make_tiny_model(tokenizer)
    dataset = qa_dataset(["Where is Alpha?"])
    rollout = make_search_rollout(RecordingEngine(), max_turns=1)
    trainer = make_trainer(model, tokenizer, dataset, rollout)
    with ExitStack() as stack:
        assert isinstance(turn_generator(trainer, tokenizer, "hf", {0}, stack), ContinuousTransformersGenerator)
        assert callable(turn_generator(trainer, tokenizer, "hf", {0}, stack, continuous=False))  # lockstep
        assert callable(turn_generator(trainer, tokenizer, "server", {0}, stack))  # vLLM: lockstep
        with pytest.raises(ValueError, match="continuous_batching=True.*'server' generation in 1 process"):
            turn_generator(trainer, tokenizer, "server", {0}, stack, continuous=True)
