"""REINFORCE: the advantage against hand-computed batches, and real training steps with the search rollout."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import cpu_config
from test_rollout import RecordingEngine, qa_dataset, row_scripted_rollout, scripted_generate
from zerosearch_trl.rewards import f1_reward
from zerosearch_trl.training.reinforce import SearchReinforceConfig, SearchReinforceTrainer, reinforce_advantages

NAN = math.nan


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [
        # weighted sums 1.0, 0.5, (unscorable), 0.5
        ("none", [1.0, 0.5, 0.0, 0.5]),
        # minus the mean of the scorable rows, 2/3; the unscorable row stays at 0
        ("batch_mean", [1 / 3, -1 / 6, 0.0, -1 / 6]),
    ],
)
def test_advantages_of_a_hand_computed_batch(baseline, expected):
    rewards = torch.tensor([[1.0, NAN], [0.0, 1.0], [NAN, NAN], [0.5, 0.0]])
    advantages = reinforce_advantages(rewards, torch.tensor([1.0, 0.5]), baseline)
    assert advantages.tolist() == pytest.approx(expected)


def test_an_unknown_baseline_is_named(tmp_path):
    with pytest.raises(ValueError, match="reinforce_baseline must be one of batch_mean, none, got 'mean'"):
        SearchReinforceConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, reinforce_baseline="mean")
    with pytest.raises(ValueError, match="got 'median'"):
        reinforce_advantages(torch.zeros(2, 1), torch.ones(1), "median")


@pytest.mark.parametrize("baseline", ["none", "batch_mean"])
def test_real_steps_use_the_episode_reward_as_advantage(tmp_path, tokenizer, tiny_model_dir, baseline):
    from transformers import AutoModelForCausalLM

    # Loaded from a folder: with beta > 0 TRL builds the KL reference model from the policy's path.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # Within each group of 2 episodes the second answers wrongly: rewards 1 and 0 in every group.
    model.generate = scripted_generate(tokenizer, wrong_answer_rows={1, 3})
    scored, seen = [], []

    def reward(completions, **kwargs):
        values = f1_reward(completions, **kwargs)
        scored.append(values)
        return values

    trainer = SearchReinforceTrainer(
        model=model,
        reward_funcs=[reward],
        args=cpu_config(
            tmp_path,
            SearchReinforceConfig,
            per_device_train_batch_size=4,
            num_generations=2,
            max_completion_length=128,
            max_steps=2,
            learning_rate=1e-2,
            beta=0.001,
            reinforce_baseline=baseline,
        ),  # fmt: skip
        train_dataset=qa_dataset(["Where is Alpha?", "Where is Beta?"]),
        processing_class=tokenizer,
        rollout_func=row_scripted_rollout(RecordingEngine()),
    )
    compute_loss = trainer._compute_loss

    def watched(model, inputs):
        seen.append({k: inputs[k].detach().clone() for k in ("advantages", "tool_mask", "completion_mask")})
        return compute_loss(model, inputs)

    trainer._compute_loss = watched
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()

    assert [sorted(values) for values in scored] == [[0.0, 0.0, 1.0, 1.0]] * 2
    for values, batch in zip(scored, seen):
        expected = torch.tensor(values) - (sum(values) / len(values) if baseline == "batch_mean" else 0.0)
        # TRL shuffles the rows before the loss: compare the multisets
        assert sorted(batch["advantages"].tolist()) == pytest.approx(sorted(expected.tolist()))
        # GRPO's group-normalised advantage would be +-1 / (0.5 + 1e-4) here: this is not it
        assert batch["advantages"].abs().max() <= 1.0
        # the observations (env_mask 0) are out of the loss
        assert (batch["tool_mask"][batch["completion_mask"].bool()] == 0).any()
    # TRL's completions table shows these advantages, not the GRPO ones it computed first
    assert sorted(trainer._logs["advantages"]) == pytest.approx(sorted(seen[-1]["advantages"].tolist()))
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert any("kl" in e for e in trainer.state.log_history)
