"""The rollout's vLLM paths (colocate and server), against stand-ins: vLLM needs a CUDA GPU and this machine has none.

The stand-ins follow the documented interfaces that the rollout uses and nothing more:
- colocate: ``vllm.SamplingParams(...)`` and ``vllm.LLM.generate([{"prompt_token_ids": ids}], sampling_params,
  use_tqdm=False)`` returning ``RequestOutput``s whose ``outputs[0]`` has ``text``, ``token_ids``,
  ``finish_reason`` and ``logprobs`` (one ``{token_id: Logprob}`` per position, the sampled token always present);
  and the engine under it, ``LLM.llm_engine``: ``add_request(request_id, {"prompt_token_ids": ids}, params)``,
  ``step()`` returning the ``RequestOutput``s that progressed (``request_id``, ``finished``), ``abort_request(ids)``;
- server: TRL's ``VLLMClient.generate(prompts, ..., max_tokens, logprobs, generation_kwargs)`` returning
  ``{"prompt_ids", "completion_ids", "logprobs", "logprob_token_ids"}``, logprobs shaped (rows, tokens, 1).
Both play the same scripted policy as the HF-path tests, so their results can be compared with the HF path exactly.
The trainer, the rollout, the tokenizer and the simulated engine are the real ones; the real vLLM runs belong to
the GPU benchmarks.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from helpers import make_tiny_model
from test_rollout import RecordingEngine, make_trainer, next_turn_ids, qa_dataset, scripted_generate
from zerosearch_trl.protocol import STOP_STRINGS
from zerosearch_trl.rollout import make_search_rollout

QUESTIONS = ["Where is Beta?", "Where is Alpha?", "Where is Gamma?", "Where is Delta?"]


def fake_logprob(token_id: int) -> float:
    """A deterministic, recognisable 'sampling logprob' per token id."""
    return -((token_id % 7) + 1) / 10


class ScriptedVLLM:
    """Plays the scripted policy the way vLLM would: stop strings end the output after the token that completes
    them (kept, with ``include_stop_str_in_output``), EOS is kept in ``token_ids``, ``max_tokens`` caps it."""

    def __init__(self, tokenizer, second_copy_wrong=False, logprob_fn=None):
        self.tokenizer, self.second_copy_wrong = tokenizer, second_copy_wrong
        self.logprob_fn = logprob_fn or (lambda context, ids: [fake_logprob(t) for t in ids])
        self.calls: list[int] = []
        self.seen: Counter = Counter()

    def complete(self, prompt_ids, max_tokens, stop):
        # Copies of one prompt share each context; with second_copy_wrong the second copy answers wrongly, so that
        # rewards differ within a GRPO group.
        self.seen[tuple(prompt_ids)] += 1
        wrong = self.second_copy_wrong and self.seen[tuple(prompt_ids)] % 2 == 0
        ids = next_turn_ids(self.tokenizer, prompt_ids, wrong)
        out: list[int] = []
        reason = "length"
        for token in ids[:max_tokens]:
            out.append(token)
            if token == self.tokenizer.eos_token_id:
                reason = "stop"
                break
            if any(s in self.tokenizer.decode(out) for s in stop):
                reason = "stop"
                break
        else:
            if len(out) < max_tokens:
                reason = "stop"
        return out, reason, self.logprob_fn(list(prompt_ids), out)


class StandInSamplingParams:
    """vLLM's ``SamplingParams`` keyword arguments that the rollout uses (an unknown keyword is a TypeError)."""

    def __init__(self, *, max_tokens, temperature, top_p, top_k, min_p, repetition_penalty, stop, seed,
                 include_stop_str_in_output, logprobs=None):  # fmt: skip
        assert include_stop_str_in_output is True
        self.max_tokens, self.stop, self.logprobs, self.seed = max_tokens, stop or [], logprobs, seed


def request_output(policy: ScriptedVLLM, prompt_ids, sampling_params, request_id=None) -> SimpleNamespace:
    """The finished ``RequestOutput`` for one prompt, as vLLM builds it."""
    ids, reason, values = policy.complete(prompt_ids, sampling_params.max_tokens, sampling_params.stop)
    logprobs = None
    if sampling_params.logprobs is not None:
        logprobs = [{t: SimpleNamespace(logprob=v, rank=1)} for t, v in zip(ids, values)]
    text = policy.tokenizer.decode(ids, skip_special_tokens=True)
    output = SimpleNamespace(text=text, token_ids=ids, finish_reason=reason, logprobs=logprobs)
    return SimpleNamespace(request_id=request_id, prompt_token_ids=prompt_ids, outputs=[output], finished=True)


class StandInEngine:
    """vLLM's engine loop: a request decodes one token per step and is reported when it finishes, so requests of
    different lengths finish at different steps and new ones join while others run."""

    def __init__(self, policy: ScriptedVLLM):
        self.policy = policy
        self.running: dict[str, list] = {}  # request id -> [steps left, finished output]
        self.added: list[tuple[str, int]] = []  # (request id, requests already running when it was added)
        self.aborted: list[str] = []
        self.seeds: list[int | None] = []

    def add_request(self, request_id, prompt, params):
        assert request_id not in self.running
        self.seeds.append(params.seed)
        output = request_output(self.policy, prompt["prompt_token_ids"], params, request_id)
        self.added.append((request_id, len(self.running)))
        self.running[request_id] = [max(len(output.outputs[0].token_ids), 1), output]

    def step(self):
        done = []
        for request_id, entry in list(self.running.items()):
            entry[0] -= 1
            if entry[0] == 0:
                done.append(self.running.pop(request_id)[1])
        return done

    def abort_request(self, request_ids):
        self.aborted.extend(request_ids)
        for request_id in request_ids:
            self.running.pop(request_id, None)


class StandInLLM:
    def __init__(self, policy: ScriptedVLLM):
        self.policy = policy
        self.llm_engine = StandInEngine(policy)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.policy.calls.append(len(prompts))
        return [request_output(self.policy, p["prompt_token_ids"], sampling_params) for p in prompts]


class StandInVLLMClient:
    """TRL's ``VLLMClient.generate`` signature (keyword names as in TRL 1.16)."""

    def __init__(self, policy: ScriptedVLLM):
        self.policy, self.requests = policy, []

    def generate(self, prompts, features=None, n=1, repetition_penalty=1.0, temperature=1.0, top_p=1.0, top_k=0,
                 min_p=0.0, max_tokens=16, logprobs=0, structured_outputs_regex=None, generation_kwargs=None):  # fmt: skip
        self.requests.append({"n": n, "max_tokens": max_tokens, "logprobs": logprobs, **(generation_kwargs or {})})
        self.policy.calls.append(len(prompts))
        outputs = [self.policy.complete(p, max_tokens, generation_kwargs["stop"]) for p in prompts]
        return {
            "prompt_ids": prompts,
            "completion_ids": [ids for ids, _, _ in outputs],
            "logprobs": [[[v] for v in values] for _, _, values in outputs],
            "logprob_token_ids": [[[t] for t in ids] for ids, _, _ in outputs],
        }


@pytest.fixture
def stand_in_vllm(monkeypatch):
    """Where the package imports vLLM, it gets the stand-in's ``SamplingParams`` instead."""
    import zerosearch_trl.generation.vllm as vllm_backend

    monkeypatch.setattr(vllm_backend, "import_vllm", lambda: SimpleNamespace(SamplingParams=StandInSamplingParams))


def model_logprobs(model):
    """What a real vLLM engine reports: the policy's own log-probabilities of the sampled tokens."""

    @torch.no_grad()
    def logprobs(context, ids):
        logits = model(torch.tensor([context + ids])).logits[0, len(context) - 1 : -1]
        return logits.log_softmax(-1).gather(-1, torch.tensor(ids)[:, None])[:, 0].tolist()

    return logprobs


def vllm_trainer(
    tokenizer, mode, max_completion_length=400, questions=QUESTIONS, second_copy_wrong=False, real_logprobs=False,
    continuous=None,
):  # fmt: skip
    """A real GRPOTrainer (built on CPU without vLLM), then configured as TRL configures a vLLM run."""
    dataset = qa_dataset(questions)
    rollout = make_search_rollout(RecordingEngine(), max_turns=2, continuous_batching=continuous)
    model = make_tiny_model(tokenizer)
    model.generate = None  # the vLLM paths must never fall back to HF generate
    trainer = make_trainer(model, tokenizer, dataset, rollout, max_completion_length)
    policy = ScriptedVLLM(tokenizer, second_copy_wrong, model_logprobs(model) if real_logprobs else None)
    trainer.args.use_vllm, trainer.args.vllm_mode = True, mode
    trainer.vllm_generation = SimpleNamespace(
        llm=StandInLLM(policy), vllm_client=StandInVLLMClient(policy), enable_sleep_mode=False
    )
    return trainer, rollout, dataset, policy


def hf_reference(tokenizer, max_completion_length=400):
    dataset = qa_dataset(QUESTIONS)
    rollout = make_search_rollout(RecordingEngine(), max_turns=2)
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    trainer = make_trainer(model, tokenizer, dataset, rollout, max_completion_length)
    return rollout(list(dataset["prompt"]), trainer)


@pytest.mark.parametrize(("mode", "continuous"), [("colocate", None), ("colocate", False), ("server", None)])
def test_vllm_paths_match_hf_and_return_sampling_logprobs(stand_in_vllm, tokenizer, mode, continuous):
    trainer, rollout, dataset, policy = vllm_trainer(tokenizer, mode, continuous=continuous)
    out = rollout(list(dataset["prompt"]), trainer)
    reference = hf_reference(tokenizer)
    assert out["completion_ids"] == reference["completion_ids"]
    assert out["env_mask"] == reference["env_mask"]
    assert out["num_searches"] == reference["num_searches"] == [0, 1, 2, 0]
    assert reference["logprobs"] is None  # HF path: TRL computes them itself
    for ids, mask, logprobs in zip(out["completion_ids"], out["env_mask"], out["logprobs"]):
        assert len(logprobs) == len(ids)
        assert [lp for lp, m in zip(logprobs, mask) if m] == [fake_logprob(t) for t, m in zip(ids, mask) if m]
        assert all(lp == 0.0 for lp, m in zip(logprobs, mask) if not m)
    turns = [4, 3, 1]  # turn 1 (4 rows), turn 2 (Alpha, Gamma, Delta), Gamma's answer turn
    engine = trainer.vllm_generation.llm.llm_engine
    if mode == "colocate" and continuous is None:  # the default: each turn is an engine request of its own
        assert policy.calls == [] and len(engine.added) == sum(turns) and not engine.running
        # a turn joined the running engine while other episodes' turns were still decoding
        assert any(running for _, running in engine.added[len(QUESTIONS) :])
    else:  # lockstep: one batched call per turn, all live rows together
        assert policy.calls == turns and engine.added == []


def test_each_colocated_request_samples_with_a_seed_of_its_own(stand_in_vllm, tokenizer):
    """vLLM seeds per request: one seed for every request would sample a GRPO group's episodes alike."""
    seeds = []
    for _ in range(2):
        trainer, rollout, dataset, _ = vllm_trainer(tokenizer, "colocate", questions=QUESTIONS[:2] * 2)
        rollout(list(dataset["prompt"]), trainer)
        seeds.append(trainer.vllm_generation.llm.llm_engine.seeds)
    assert None not in seeds[0] and len(set(seeds[0])) == len(seeds[0])  # the same question's episodes too
    assert seeds[0] == seeds[1]  # and a rerun of the step seeds alike


def test_a_vllm_simulator_samples_each_prompt_with_its_own_seed(stand_in_vllm):
    """``LLM.generate`` and ``LLM.chat`` take one SamplingParams per prompt (vLLM does not install here: a stand-in
    LLM records what it was given)."""
    from zerosearch_trl.generation.base import GenerationParams
    from zerosearch_trl.generation.vllm import VLLMGenerator

    class RecordingLLM:
        def __init__(self):
            self.seeds = {}

        def _answer(self, prompts, sampling):
            for prompt, params in zip(prompts, sampling, strict=True):
                self.seeds[str(prompt)] = params.seed
            completion = SimpleNamespace(text="ok", token_ids=[], finish_reason="stop", logprobs=None)
            return [SimpleNamespace(outputs=[completion]) for _ in prompts]

        def generate(self, prompts, sampling_params, use_tqdm=True):
            return self._answer(prompts, sampling_params)

        def chat(self, messages, sampling_params, use_tqdm=True, add_generation_prompt=True,
                 continue_final_message=False):  # fmt: skip
            return self._answer(messages, sampling_params)

    llm = RecordingLLM()
    chat = [{"role": "user", "content": "q"}]
    prefilled = [*chat, {"role": "assistant", "content": "Doc 1 (Title:"}]
    texts = VLLMGenerator(llm).generate(["a text", chat, prefilled], GenerationParams(seed=1), seeds=[None, 5, 6])
    assert [t.text for t in texts] == ["ok"] * 3
    assert list(llm.seeds.values()) == [1, 5, 6]  # None keeps params.seed


def test_colocated_engine_requests_are_aborted_when_the_rollout_fails(stand_in_vllm, tokenizer):
    """A failure mid-rollout (here, the episode bookkeeping) leaves no request of it running in the engine."""
    trainer, rollout, dataset, _ = vllm_trainer(tokenizer, "colocate")
    engine = trainer.vllm_generation.llm.llm_engine
    step = engine.step

    def failing_step():
        if len(engine.added) > len(QUESTIONS):  # once a second turn is in the engine
            raise RuntimeError("engine step failed")
        return step()

    engine.step = failing_step
    with pytest.raises(RuntimeError, match="engine step failed"):
        rollout(list(dataset["prompt"]), trainer)
    assert engine.aborted and not engine.running  # what was still decoding went out with the rollout


def test_server_requests_carry_stop_strings_and_sampled_token_logprobs(stand_in_vllm, tokenizer):
    trainer, rollout, dataset, _ = vllm_trainer(tokenizer, "server")
    rollout(list(dataset["prompt"]), trainer)
    request = trainer.vllm_generation.vllm_client.requests[0]
    assert request["stop"] == list(STOP_STRINGS) and request["include_stop_str_in_output"] is True
    assert request["n"] == 1 and request["logprobs"] == 0
    assert request["max_tokens"] == 400 - 1  # one token kept for the closing EOS


def test_colocated_sleep_mode_wakes_once_per_rollout_not_per_turn(stand_in_vllm, tokenizer):
    """#21.5: a wake per turn reloaded the weights (level-2 sleep discards them) and lost the prefix cache."""
    trainer, rollout, dataset, _ = vllm_trainer(tokenizer, "colocate")
    events = []
    llm = trainer.vllm_generation.llm
    add_request = llm.llm_engine.add_request
    llm.llm_engine.add_request = lambda *args: events.append(("generate",)) or add_request(*args)
    llm.wake_up = lambda tags: events.append(("wake", tuple(tags)))
    llm.sleep = lambda level: events.append(("sleep", level))
    trainer.vllm_generation.enable_sleep_mode = True
    trainer.vllm_generation._llm_weights_sleeping = True
    trainer.vllm_generation.sync_weights = lambda: events.append(("sync",))
    rollout(list(dataset["prompt"]), trainer)
    turns = events.count(("generate",))
    assert turns == 8  # every episode's turns: 4 + 3 + 1
    assert events == [("sync",), ("wake", ("kv_cache",))] + [("generate",)] * turns + [("sleep", 2)]
    assert trainer.vllm_generation._llm_weights_sleeping is True


def test_colocate_with_tensor_parallelism_is_refused_clearly(stand_in_vllm, tokenizer):
    trainer, rollout, dataset, _ = vllm_trainer(tokenizer, "colocate")
    trainer.args.vllm_tensor_parallel_size = 2
    with pytest.raises(NotImplementedError, match="vllm_tensor_parallel_size=2"):
        rollout(list(dataset["prompt"]), trainer)


def test_unmasked_observations_are_refused_on_the_vllm_paths(stand_in_vllm, tokenizer):
    """Observation tokens have no sampling logprobs (placeholders 0.0): unmasked, the correction would be wrong."""
    trainer, rollout, dataset, _ = vllm_trainer(tokenizer, "server")
    rollout.mask_observations = False
    with pytest.raises(ValueError, match="mask_observations=False .* HF generation only"):
        rollout(list(dataset["prompt"]), trainer)


@pytest.mark.slow
def test_grpo_step_through_the_colocate_path_uses_the_logprobs(stand_in_vllm, tokenizer):
    """A real training step with the trainer set up as for vLLM: TRL's importance-sampling correction consumes the
    rollout's logprobs (with logprobs missing or misaligned it would fail to build its tensors)."""
    trainer, rollout, dataset, policy = vllm_trainer(
        tokenizer,
        "colocate",
        questions=["Where is Alpha?", "Where is Beta?"],
        second_copy_wrong=True,
        real_logprobs=True,
    )
    trainer.use_vllm, trainer.vllm_mode, trainer._last_loaded_step = True, "colocate", -1
    trainer.vllm_generation.sync_weights = lambda: None
    trainer.args.max_steps = 1
    trainer.state.max_steps = 1
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.vllm_generation.llm.llm_engine.added, "the stand-in engine was not used"
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert any(k.startswith("sampling/importance_sampling_ratio") for k in logged), sorted(logged)
    step = trainer.state.log_history[0]
    assert step["completions/clipped_ratio"] == 0.0 and 0.0 < step["reward"] < 1.0
    # the rollout's logprobs are the policy's own (as vLLM's would be, up to numerics): the ratio is ~1
    assert step["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-3)


def test_evaluate_drives_a_vllm_policy_like_the_hf_path(stand_in_vllm, tokenizer):
    """evaluate() with a VLLMGenerator policy (the stand-in LLM) scores the scripted answers exactly."""
    from zerosearch_trl.evaluation import evaluate
    from zerosearch_trl.generation.vllm import VLLMGenerator

    policy = ScriptedVLLM(tokenizer)
    result = evaluate(
        VLLMGenerator(StandInLLM(policy)), {"toy": qa_dataset(QUESTIONS)}, RecordingEngine(), tokenizer=tokenizer,
        prompt_style="one_shot", max_completion_length=400, batch_size=3, progress=False,
    )  # fmt: skip
    rows = {row["question"]: row for row in result.predictions}
    assert result.datasets["toy"]["n"] == 4 and max(policy.calls) == 3
    assert rows["Where is Alpha?"]["exact_match"] == 1.0 and rows["Where is Alpha?"]["searches"] == ["alpha place"]
    assert rows["Where is Beta?"]["exact_match"] == 1.0 and rows["Where is Beta?"]["searches"] == []
    hf = {q: row["prediction"] for q, row in zip(QUESTIONS, _hf_predictions(tokenizer))}
    assert {q: row["prediction"] for q, row in rows.items()} == hf  # same episodes as the in-process HF path


def _hf_predictions(tokenizer):
    from zerosearch_trl.evaluation import evaluate

    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    result = evaluate(
        model, {"toy": qa_dataset(QUESTIONS)}, RecordingEngine(), tokenizer=tokenizer, prompt_style="one_shot",
        max_completion_length=400, batch_size=4, progress=False,
    )  # fmt: skip
    return result.predictions
