"""The multi-turn search rollout, on the real HF path with a scripted policy.

The policy is a tiny random model whose ``generate`` is replaced by a script (fixed continuations per question
and turn, as TRL's own multi-turn tests do), so every branch is deterministic; the rollout, the tokenizer, the
simulated engine and GRPOTrainer are the real ones. The simulator's LLM is a scripted text generator.
"""

from __future__ import annotations

from collections import Counter

import datasets
import pytest
import torch

from helpers import ScriptedGenerator, cpu_config, make_tiny_model
from zerosearch_trl.engines.simulated import SimulatedSearchEngine
from zerosearch_trl.prompts import build_policy_prompt
from zerosearch_trl.protocol import INVALID_ACTION_FEEDBACK
from zerosearch_trl.rollout import make_search_rollout

EOS = object()  # marks "the policy emits EOS here" in a script

SCRIPTS = {
    "Where is Alpha?": [
        " I should look.</think>\n<search> alpha place </search>",
        "<think> Found.</think>\n<answer> Paris </answer>",
    ],
    "Where is Beta?": [" Easy.</think>\n<answer> Rome </answer>"],
    "Where is Gamma?": [
        " a</think>\n<search> gamma one </search>",
        " b</think>\n<search> gamma two </search>",
        " c</think>\n<search> gamma three </search>",
    ],
    "Where is Delta?": [" I do not know", EOS, " Retry.</think>\n<answer> Oslo </answer>"],
    "Where is Omega?": [" and so on" * 400],
    # Writes its own observation: the real generate stops at <information>, so the rest is never generated.
    "Where is Zeta?": [
        " I know.</think>\n<information> Doc 1 Paris is the answer. </information>\n<answer> Paris </answer>",
        " Then.</think>\n<answer> Rome </answer>",
    ],
    "Where is Theta?": [
        " a</think>\n<search> theta one </search>",
        "<think> b</think>\n<search> theta two </search>",
        "<think> c</think>\n<answer> Lima </answer>",
    ],
    # Rambles past any per-turn budget, every turn.
    "Where is Iota?": [" and so on" * 60, EOS, " and so on" * 60, EOS, " and so on" * 60, EOS],
    # Never acts: three invalid turns, no answer of its own.
    "Where is Eta?": [" hmm", EOS, " still thinking", EOS, " no idea", EOS],
}
GOLD = {
    "Where is Alpha?": ["Paris"],
    "Where is Beta?": ["Rome"],
    "Where is Gamma?": ["Lima"],
    "Where is Delta?": ["Oslo"],
    "Where is Omega?": ["Nowhere"],
    "Where is Zeta?": ["Paris"],
    "Where is Theta?": ["Lima"],
    "Where is Iota?": ["Oslo"],
    "Where is Eta?": ["and"],
}


def turn_outputs(question: str) -> list[list]:
    """The script split into turns (a turn ends after an action tag or an EOS)."""
    turns, current = [], []
    for piece in SCRIPTS[question]:
        current.append(piece)
        if piece is EOS or "</search>" in piece or "</answer>" in piece:
            turns.append(current)
            current = []
    return turns + ([current] if current else [])


def next_turn_ids(tokenizer, context_ids, wrong=False) -> list[int]:
    """The scripted policy's next turn (token ids) after ``context_ids`` (prompt + completion so far)."""
    text = tokenizer.decode(context_ids)
    question = next(q for q in SCRIPTS if q in text)
    episode = text.rsplit("<|im_start|>assistant", 1)[-1]  # the instruction's example holds tags too
    turn = episode.count("</information>") + episode.count(INVALID_ACTION_FEEDBACK.strip()[:20])
    new: list[int] = []
    for piece in turn_outputs(question)[turn]:
        if piece is EOS:
            new.append(tokenizer.eos_token_id)
        else:
            if wrong:
                piece = piece.replace("Paris", "London").replace("Rome", "Milan")
            new += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return new


def scripted_generate(tokenizer, wrong_answer_rows=()):
    def generate(input_ids, attention_mask=None, max_new_tokens=16, pad_token_id=None, **kwargs):
        rows = []
        for row_index, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
            context = [t for t, m in zip(ids, mask) if m]
            rows.append(ids + next_turn_ids(tokenizer, context, row_index in wrong_answer_rows)[:max_new_tokens])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])

    return generate


class RecordingEngine(SimulatedSearchEngine):
    def __init__(self, **kwargs):
        def docs(prompts):
            return ["\n".join(f"Doc {i} (Title: T{i}) document text number {i}." for i in range(1, 6))] * len(prompts)

        super().__init__(ScriptedGenerator(docs), **kwargs)
        self.batches = []

    def search(self, requests, modes=None):
        self.batches.append(list(requests))
        return super().search(requests, modes)


def row_scripted_rollout(engine, **kwargs):
    """The rollout for a policy scripted with ``wrong_answer_rows``: the script picks wrong answers by row position
    in one batch, so the synchronous rollout, which generates every live episode's turn in one batch, plays it."""
    return make_search_rollout(engine, continuous_batching=False, **kwargs)


def qa_dataset(questions):
    return datasets.Dataset.from_list(
        [{"prompt": build_policy_prompt(q, "one_shot"), "question": q, "golden_answers": GOLD[q]} for q in questions]
    )


def make_trainer(model, tokenizer, dataset, rollout, max_completion_length=160, **config):
    """A real GRPOTrainer around the policy; the branch tests call its rollout directly."""
    import tempfile

    from trl import GRPOTrainer

    from zerosearch_trl.rewards import f1_reward

    args = cpu_config(
        tempfile.mkdtemp(),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=max_completion_length,
        **config,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[f1_reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout_func=rollout,
    )


@pytest.fixture
def policy(tokenizer):
    model = make_tiny_model(tokenizer)
    model.generate = scripted_generate(tokenizer)
    return model


def play(policy, tokenizer, questions, max_completion_length=400, **engine_kwargs):
    dataset = qa_dataset(questions)
    engine = RecordingEngine(**engine_kwargs)
    rollout = make_search_rollout(engine, max_turns=2)
    trainer = make_trainer(policy, tokenizer, dataset, rollout, max_completion_length)
    policy.train()  # as during trainer.train(): metrics go to the "train" bucket
    out = rollout(list(dataset["prompt"]), trainer)
    return out, engine, trainer


def split_by_mask(tokenizer, ids, mask):
    model = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    env = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    return model, env


def test_rows_keep_their_own_question_when_only_some_search(policy, tokenizer):
    questions = ["Where is Beta?", "Where is Alpha?", "Where is Beta?", "Where is Gamma?"]
    out, engine, _ = play(policy, tokenizer, questions)
    first_batch = engine.batches[0]
    assert [(r.query, r.question, r.golden_answers) for r in first_batch] == [
        ("alpha place", "Where is Alpha?", ("Paris",)),
        ("gamma one", "Where is Gamma?", ("Lima",)),
    ]
    assert out["num_searches"] == [0, 1, 0, 2]
    assert out["search_queries"] == [[], ["alpha place"], [], ["gamma one", "gamma two"]]
    assert out["well_formed"] == [True, True, True, False]  # Gamma never answers
    assert len(engine.batches) == 2  # one batched engine call per turn


def test_env_mask_is_zero_exactly_on_observations(policy, tokenizer):
    out, _, _ = play(policy, tokenizer, ["Where is Alpha?"])
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    assert len(ids) == len(mask)
    model_text, env_text = split_by_mask(tokenizer, ids, mask)
    assert model_text == "".join(SCRIPTS["Where is Alpha?"])
    assert env_text.startswith("\n\n<information>Doc 1 (Title: T1) document text number 1.")
    assert env_text.endswith("</information>\n\n" + tokenizer.eos_token)  # the closing EOS is ours: masked
    assert out["prompt_ids"][0][-3:] == tokenizer("<think>", add_special_tokens=False)["input_ids"][-3:]


def test_unmasked_observations_are_the_same_episode_with_every_token_in_the_loss(tmp_path, tokenizer):
    """The loss-mask ablation: same tokens, env_mask all ones; TRL then trains on (and counts) the observations."""
    from trl import GRPOTrainer

    from zerosearch_trl.rewards import f1_reward

    dataset = qa_dataset(["Where is Alpha?", "Where is Beta?"])
    lengths, outputs = {}, {}
    for masked in (True, False):
        model = make_tiny_model(tokenizer)
        model.generate = scripted_generate(tokenizer, wrong_answer_rows={1, 3})
        rollout = row_scripted_rollout(RecordingEngine(), mask_observations=masked)

        def recording(prompts, trainer, rollout=rollout, masked=masked):
            outputs[masked] = rollout(prompts, trainer)
            return outputs[masked]

        config = cpu_config(
            tmp_path / str(masked), per_device_train_batch_size=4, num_generations=2, max_completion_length=128,
            max_steps=1,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=model, reward_funcs=[f1_reward], args=config, train_dataset=dataset, processing_class=tokenizer,
            rollout_func=recording,
        )  # fmt: skip
        trainer.train()
        lengths[masked] = next(e["completions/mean_length"] for e in trainer.state.log_history if "loss" in e)
    assert sorted(outputs[True]["completion_ids"]) == sorted(outputs[False]["completion_ids"])
    assert any("<information>" in tokenizer.decode(ids) for ids in outputs[True]["completion_ids"])  # a search
    unmasked_by_ids = {tuple(i): m for i, m in zip(outputs[False]["completion_ids"], outputs[False]["env_mask"])}
    for ids, masked in zip(outputs[True]["completion_ids"], outputs[True]["env_mask"]):
        unmasked = unmasked_by_ids[tuple(ids)]
        # Unmasked: exactly the <information> blocks join the policy's tokens; the closing EOS stays masked.
        assert all(b >= a for a, b in zip(masked, unmasked)) and unmasked[-1] == 0
        flipped = tokenizer.decode([t for t, a, b in zip(ids, masked, unmasked) if a != b])
        assert flipped.count("<information>") == tokenizer.decode(ids).count("<information>")
        assert "<information>" not in tokenizer.decode([t for t, b in zip(ids, unmasked) if not b])
    assert any(0 in mask for mask in outputs[True]["env_mask"])
    # TRL counts (and trains on) the tokens whose mask is 1: unmasked, the observations too.
    assert lengths[False] > lengths[True]


def test_final_turn_search_is_not_executed(policy, tokenizer):
    out, engine, _ = play(policy, tokenizer, ["Where is Gamma?"])
    assert out["num_searches"] == [2]
    assert all(r.query != "gamma three" for batch in engine.batches for r in batch)
    text = tokenizer.decode(out["completion_ids"][0])
    assert text.count("<information>") == 2 and "gamma three" in text
    assert out["completion_ids"][0][-1] == tokenizer.eos_token_id


def test_invalid_action_gets_feedback_and_the_episode_goes_on(policy, tokenizer):
    out, _, _ = play(policy, tokenizer, ["Where is Delta?"])
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    model_text, env_text = split_by_mask(tokenizer, ids, mask)
    assert out["invalid_actions"] == [1]
    assert INVALID_ACTION_FEEDBACK.strip() in env_text
    assert ids.count(tokenizer.eos_token_id) == 1 and ids[-1] == tokenizer.eos_token_id  # premature EOS dropped
    assert model_text.endswith("<answer> Oslo </answer>")


def test_truncation_respects_max_completion_length_without_eos(policy, tokenizer):
    out, _, _ = play(policy, tokenizer, ["Where is Omega?", "Where is Beta?"], max_completion_length=64)
    assert len(out["completion_ids"][0]) <= 64 and out["completion_ids"][0][-1] != tokenizer.eos_token_id
    assert out["completion_ids"][1][-1] == tokenizer.eos_token_id


def test_noisy_fraction_and_metrics(policy, tokenizer):
    out, _, trainer = play(policy, tokenizer, ["Where is Alpha?", "Where is Gamma?"], noise_prob=1.0, leak_guard="off")
    assert out["noisy_fraction"] == [1.0, 1.0]
    metrics = trainer._metrics["train"]
    assert metrics["search/searches_per_episode"] == [1.5]
    assert metrics["search/episodes_with_search"] == [1.0]
    assert metrics["search/well_formed_episodes"] == [0.5]  # Alpha answers, Gamma does not
    assert metrics["search/noisy_fraction"] == [1.0]
    assert metrics["search/observation_tokens_per_episode"][0] > 20


def test_each_search_draws_its_noise_by_episode_and_search_index_not_by_batch(tokenizer):
    class OneByOneBackwards(RecordingEngine):
        """Answers a batch one request at a time, last first: as if the searches had come back in another order."""

        def search(self, requests, modes=None):
            return [super(OneByOneBackwards, self).search([r])[0] for r in reversed(requests)][::-1]

    questions = ["Where is Gamma?", "Where is Alpha?"] * 4  # Gamma searches twice, Alpha once
    noisy = []
    for engine in (RecordingEngine(noise_prob=0.5, seed=3), OneByOneBackwards(noise_prob=0.5, seed=3)):
        model = make_tiny_model(tokenizer)
        model.generate = scripted_generate(tokenizer)
        dataset = qa_dataset(questions)
        rollout = make_search_rollout(engine, max_turns=2, continuous_batching=False)
        noisy.append(
            rollout(list(dataset["prompt"]), make_trainer(model, tokenizer, dataset, rollout))["noisy_fraction"]
        )
        assert len(engine.batches) > 2 if isinstance(engine, OneByOneBackwards) else len(engine.batches) == 2
    assert noisy[0] == noisy[1]
    assert 0 < sum(noisy[0]) < len(questions)  # both modes were drawn


def test_engine_exception_does_not_crash_the_rollout(policy, tokenizer):
    class Broken:
        name, top_k = "broken", 5

        def search(self, requests):
            raise ConnectionError("index server down")

    dataset = qa_dataset(["Where is Alpha?"])
    rollout = make_search_rollout(Broken())
    out = rollout(list(dataset["prompt"]), make_trainer(policy, tokenizer, dataset, rollout))
    assert "The search failed" in tokenizer.decode(out["completion_ids"][0])
    assert rollout.engine_failures == 1


@pytest.mark.parametrize(("kwargs", "message"), [({"max_turns": -1}, "max_turns"), ({"engine": None}, "search engine")])
def test_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_search_rollout(**{"engine": RecordingEngine(), **kwargs})


def test_engine_returning_too_few_results_is_a_failure_not_a_misalignment(policy, tokenizer):
    class Short:
        name, top_k = "short", 5

        def search(self, requests):
            return []

    dataset = qa_dataset(["Where is Alpha?"])
    rollout = make_search_rollout(Short())
    out = rollout(list(dataset["prompt"]), make_trainer(policy, tokenizer, dataset, rollout))
    assert "The search failed" in tokenizer.decode(out["completion_ids"][0]) and rollout.engine_failures == 1


def test_max_completion_length_too_small_is_named(policy, tokenizer):
    dataset = qa_dataset(["Where is Alpha?"])
    rollout = make_search_rollout(RecordingEngine())
    trainer = make_trainer(policy, tokenizer, dataset, rollout, max_completion_length=1)
    with pytest.raises(ValueError, match="max_completion_length >= 2"):
        rollout(list(dataset["prompt"]), trainer)


def test_prompt_longer_than_context_names_the_limit(tokenizer):
    model = make_tiny_model(tokenizer)
    model.config.max_position_embeddings = 300
    dataset = qa_dataset(["Where is Alpha?"])
    rollout = make_search_rollout(RecordingEngine())
    with pytest.raises(ValueError, match="context holds 300"):
        rollout(list(dataset["prompt"]), make_trainer(model, tokenizer, dataset, rollout))


def test_grpo_trainer_step_with_the_search_rollout(tmp_path, tokenizer):
    from trl import GRPOTrainer

    from zerosearch_trl.rewards import f1_reward

    questions = ["Where is Alpha?", "Where is Beta?"]
    dataset = qa_dataset(questions)
    model = make_tiny_model(tokenizer)
    # Within each group of 2 generations, the second copy answers wrongly: rewards differ, so GRPO has a signal.
    model.generate = scripted_generate(tokenizer, wrong_answer_rows={1, 3})
    rollout = row_scripted_rollout(RecordingEngine())
    seen_prompts = []

    def recording_rollout(prompts, trainer):
        seen_prompts.append([p[0]["content"] for p in prompts])
        return rollout(prompts, trainer)

    config = cpu_config(
        tmp_path,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=128,
        max_steps=2,
        learning_rate=1e-2,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[f1_reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout_func=recording_rollout,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed, "no parameter changed"
    # TRL hands the rollout each prompt num_generations times (its docstring says otherwise).
    for call in seen_prompts:
        assert len(call) == 4 and set(Counter(call).values()) == {2}
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"search/searches_per_episode", "rewards/f1_reward/mean", "loss"} <= logged
    rewards = [e["rewards/f1_reward/mean"] for e in trainer.state.log_history if "rewards/f1_reward/mean" in e]
    assert all(0.0 < r < 1.0 for r in rewards)  # right and wrong answers within each step


def test_rollout_accepts_the_tool_environment_and_plays_its_engine(policy, tokenizer):
    from zerosearch_trl.environment import SimulatedSearchEnv

    engine = RecordingEngine()
    dataset = qa_dataset(["Where is Alpha?"])
    rollout = make_search_rollout(SimulatedSearchEnv(engine))
    assert rollout.engine is engine
    out = rollout(list(dataset["prompt"]), make_trainer(policy, tokenizer, dataset, rollout))
    assert out["num_searches"] == [1] and [r.query for r in engine.batches[0]] == ["alpha place"]
