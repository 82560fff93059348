"""PPO: GAE and the value loss against hand-computed tensors, bad settings before any model loads, and a real
2-step PPO run with the search rollout on a tiny model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from helpers import cpu_config
from test_rollout import RecordingEngine, qa_dataset, row_scripted_rollout, scripted_generate
from zerosearch_trl.rewards import f1_reward
from zerosearch_trl.training.ppo import SearchPPOTrainer, clipped_value_loss, masked_gae, whiten
from zerosearch_trl.training.ppo_config import SearchPPOConfig, check_ppo_config


def ppo_config(tmp_path, **kwargs):
    return cpu_config(tmp_path, SearchPPOConfig, **kwargs)


def test_gae_skips_observation_tokens_hand_computed():
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 9.0, 0.2, 0.6]])  # 9.0 sits on an observation token: it must play no part
    mask = torch.tensor([[1, 0, 1, 1]])
    advantages, returns = masked_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # t=3: delta = 1 - 0.6 = 0.4;            A = 0.4
    # t=2: delta = 0.9 * 0.6 - 0.2 = 0.34;   A = 0.34 + 0.72 * 0.4 = 0.628
    # t=0: delta = 0.9 * 0.2 - 0.5 = -0.32;  A = -0.32 + 0.72 * 0.628 = 0.13216 (t=1 is skipped)
    assert advantages.tolist()[0] == pytest.approx([0.13216, 0.0, 0.628, 0.4])
    assert returns.tolist()[0] == pytest.approx([0.63216, 0.0, 0.828, 1.0])


def test_gae_of_two_rows_with_the_papers_gamma_and_lambda():
    rewards = torch.tensor([[0.0, -0.1, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    values = torch.tensor([[1.0, 1.0, 1.0, 7.0], [0.3, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    advantages, returns = masked_gae(rewards, values, mask)
    # gamma = lambda = 1: the undiscounted reward to go minus the value, model tokens only
    torch.testing.assert_close(advantages, torch.tensor([[0.9, 0.9, 1.0, 0.0], [-0.3, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.9, 1.9, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))


def test_whitening_and_value_loss_ignore_observation_tokens():
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    white = whiten(torch.tensor([[1.0, 100.0, 2.0, 3.0]]), mask)
    assert white[0, 1] == 0.0 and white[mask.bool()].mean().item() == pytest.approx(0.0, abs=1e-6)
    values, old, returns = torch.tensor([[0.2, 0.4, 0.9, 1.5]]), torch.zeros(1, 4), torch.ones(1, 4)
    loss = clipped_value_loss(values, old, returns, mask, clip=0.5)
    # per model token: max((v - 1)^2, (clip(v, -0.5, 0.5) - 1)^2) = 0.64, 0.25, 0.25 -> half their mean
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.25 + 0.25) / 3)
    moved = values.clone()
    moved[0, 1] = 50.0  # an observation token's value changes nothing
    assert clipped_value_loss(moved, old, returns, mask, clip=0.5).item() == pytest.approx(loss.item())


def test_paper_defaults(tmp_path):
    config = ppo_config(tmp_path)
    assert (config.critic_learning_rate, config.gamma, config.lam) == (1e-5, 1.0, 1.0)
    assert (config.cliprange_value, config.epsilon, config.beta) == (0.5, 0.2, 0.001)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.5}, "gamma and lam must be in \\[0, 1\\]"),
        ({"cliprange_value": 0.0}, "cliprange_value and critic_learning_rate must be > 0"),
    ],
)
def test_bad_ppo_values_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ppo_config(tmp_path, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"multi_objective_aggregation": "normalize_then_sum"}, "normalises rewards per GRPO group"),
        ({"loss_type": "cispo"}, "loss_type='cispo' is not PPO's clipped surrogate"),
    ],
)
def test_grpo_only_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_ppo_config(ppo_config(tmp_path, **kwargs))


def test_a_critic_that_cannot_read_the_policy_is_refused_from_configs_alone(tmp_path, tiny_model_dir):
    from transformers import LlamaConfig, ViTConfig

    other_vocab = tmp_path / "other-vocab"
    LlamaConfig(vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        other_vocab
    )
    vision = tmp_path / "vision"
    ViTConfig().save_pretrained(vision)
    with pytest.raises(ValueError, match="vocabulary of 1000 tokens.*must share its tokenizer"):
        check_ppo_config(ppo_config(tmp_path, critic_model_name_or_path=str(other_vocab)), str(tiny_model_dir))
    with pytest.raises(ValueError, match="is a 'vit' model.*value head"):
        check_ppo_config(ppo_config(tmp_path, critic_model_name_or_path=str(vision)), str(tiny_model_dir))
    check_ppo_config(ppo_config(tmp_path), str(tiny_model_dir))  # the policy's own checkpoint fits


def test_real_ppo_steps_with_the_search_rollout(tmp_path, tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.generate = scripted_generate(tokenizer, wrong_answer_rows={1, 3})
    trainer = SearchPPOTrainer(
        model=model,
        reward_funcs=[f1_reward],
        args=ppo_config(
            tmp_path / "run",
            per_device_train_batch_size=4,
            num_generations=2,
            max_completion_length=128,
            max_steps=2,
            learning_rate=1e-2,
            critic_learning_rate=1e-2,
            save_strategy="steps",
            save_steps=1,
        ),  # fmt: skip
        train_dataset=qa_dataset(["Where is Alpha?", "Where is Beta?"]),
        processing_class=tokenizer,
        rollout_func=row_scripted_rollout(RecordingEngine()),
    )
    critic = trainer.critic
    # the critic starts from the policy's checkpoint: same backbone weights
    assert torch.equal(critic.model.embed_tokens.weight, model.model.embed_tokens.weight)
    # and checkpoints its activations as the policy does (TRL's default), or its backward would hold them all
    assert trainer.args.gradient_checkpointing and critic.is_activation_checkpointing
    seen = []
    compute_loss = trainer._compute_loss

    def watched(model, inputs):
        seen.append({k: inputs[k].detach().clone() for k in ("advantages", "returns", "tool_mask", "completion_mask")})
        return compute_loss(model, inputs)

    trainer._compute_loss = watched
    policy_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    critic_before = {n: p.detach().clone() for n, p in critic.named_parameters()}
    trainer.train()

    assert any(not torch.equal(policy_before[n], p.detach()) for n, p in model.named_parameters())
    assert any(not torch.equal(critic_before[n], p.detach()) for n, p in critic.named_parameters())
    for batch in seen:
        observation = batch["completion_mask"].bool() & (batch["tool_mask"] == 0)
        assert observation.any()  # the episodes searched: there are observation tokens
        assert batch["advantages"].shape == batch["completion_mask"].shape  # per token
        assert (batch["advantages"][observation] == 0).all() and (batch["returns"][observation] == 0).all()
        assert batch["advantages"][batch["completion_mask"].bool() & ~observation].abs().sum() > 0
    # TRL's completions table shows each episode's mean advantage over its model tokens
    last = seen[-1]
    model_tokens = (last["completion_mask"] * last["tool_mask"]).float()
    per_episode = (last["advantages"] * model_tokens).sum(dim=1) / model_tokens.sum(dim=1).clamp(min=1.0)
    assert sorted(trainer._logs["advantages"]) == pytest.approx(sorted(per_episode.tolist()))
    logs = [e for e in trainer.state.log_history if "ppo/value_loss" in e]
    assert len(logs) == 2
    assert all(math.isfinite(e["ppo/value_loss"]) and "ppo/kl" in e and "ppo/explained_variance" in e for e in logs)
    assert (tmp_path / "run" / "checkpoint-1" / "critic_state.pt").exists()
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "critic" / "config.json").exists()


def one_question_trainer(tmp_path, tokenizer, model, max_completion_length, **kwargs):
    """A 1-step PPO run on one question, two episodes, critic learning rate 1e-2."""
    return SearchPPOTrainer(
        model=model,
        reward_funcs=[f1_reward],
        args=ppo_config(
            tmp_path,
            per_device_train_batch_size=2,
            num_generations=2,
            max_completion_length=max_completion_length,
            max_steps=1,
            critic_learning_rate=1e-2,
        ),  # fmt: skip
        train_dataset=qa_dataset(["Where is Alpha?"]),
        processing_class=tokenizer,
        rollout_func=row_scripted_rollout(RecordingEngine()),
        **kwargs,
    )


def test_a_lora_policy_gets_a_lora_critic(tmp_path, tokenizer, tiny_model_dir):
    from peft import LoraConfig, PeftModel

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = one_question_trainer(tmp_path, tokenizer, str(tiny_model_dir), 16, peft_config=lora)
    critic = trainer.critic
    assert isinstance(critic, PeftModel)
    trainable = {n for n, p in critic.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert any("score" in n for n in trainable)  # the value head trains in full
    frozen_before = {n: p.detach().clone() for n, p in critic.named_parameters() if not p.requires_grad}
    head_before = {n: p.detach().clone() for n, p in critic.named_parameters() if "score" in n and p.requires_grad}
    trainer.train()
    params = dict(critic.named_parameters())
    assert all(torch.equal(frozen_before[n], params[n].detach()) for n in frozen_before)
    assert any(not torch.equal(head_before[n], params[n].detach()) for n in head_before)


def test_a_nan_critic_gradient_skips_the_critic_update(tmp_path, tokenizer, tiny_model_dir, caplog):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.generate = scripted_generate(tokenizer, wrong_answer_rows={1})
    trainer = one_question_trainer(tmp_path, tokenizer, model, 128)
    critic = trainer.critic
    critic.score.weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    before = {n: p.detach().clone() for n, p in critic.named_parameters()}
    trainer.train()
    assert all(torch.equal(before[n], p.detach()) for n, p in critic.named_parameters())
    assert "the critic's gradients hold NaN or inf; its update was skipped" in caplog.text


# --- PPO at scale (#21, items 7 to 10) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, {}, "PPO under DeepSpeed is not supported"),
        ({"ACCELERATE_USE_FSDP": "true"}, {}, "PPO under FSDP is not supported"),
        ({}, {"fsdp": "full_shard"}, "PPO under FSDP is not supported"),
        ({}, {"fp16": True}, "PPO with fp16"),
    ],
)
def test_what_the_critic_cannot_follow_is_refused_from_configs_alone(tmp_path, monkeypatch, env, kwargs, message):
    config = SimpleNamespace(**{**vars(ppo_config(tmp_path)), "fsdp": None, "deepspeed": None, "fp16": False, **kwargs})
    for name, value in env.items():  # what accelerate launch sets (after the config: DeepSpeed is not installed)
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        check_ppo_config(config)


def test_half_precision_weights_are_refused_with_the_fix(tmp_path, tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"policy trains torch.bfloat16 weights.*--dtype float32 --bf16 true"):
        one_question_trainer(tmp_path, tokenizer, model, 16)


def test_the_train_job_refuses_bf16_ppo_before_any_model_loads():
    from trl import ModelConfig

    from zerosearch_trl.training.config import JobArguments, SearchScriptArguments, check_config

    args = JobArguments.with_defaults(
        script=SearchScriptArguments(algorithm="ppo"), model=ModelConfig(dtype="bfloat16")
    )
    with pytest.raises(ValueError, match="--dtype float32 --bf16 true"):
        check_config(args.script, args.engine, args.curriculum, args.training, args.model)


def test_the_value_pass_runs_in_chunks_and_matches_one_pass(tmp_path, tokenizer, tiny_model_dir):
    trainer = one_question_trainer(tmp_path, tokenizer, str(tiny_model_dir), 16)
    torch.manual_seed(0)
    inputs = {
        "prompt_ids": torch.randint(0, 100, (5, 6)),
        "prompt_mask": torch.ones(5, 6, dtype=torch.long),
        "completion_ids": torch.randint(0, 100, (5, 4)),
        "completion_mask": torch.ones(5, 4, dtype=torch.long),
    }
    rows = []
    handle = trainer.critic.register_forward_hook(lambda module, args, output: rows.append(output.logits.size(0)))
    with torch.no_grad():
        chunked = trainer._values(inputs, batch_size=2)
        whole = trainer._values(inputs)
    handle.remove()
    assert rows == [2, 2, 1, 5]  # three chunks, then the one pass
    torch.testing.assert_close(chunked, whole)


def test_whitening_uses_every_process_s_tokens():
    mine, theirs = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[3.0, 10.0]])
    mine_mask, theirs_mask = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0]])

    def reduce(local):  # what accelerator.reduce(..., "sum") returns with the other process's sums
        other = torch.stack([theirs_mask.sum(), (theirs * theirs_mask).sum(), (theirs**2 * theirs_mask).sum()])
        return local + other.double()

    together = whiten(torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3))
    torch.testing.assert_close(
        whiten(mine, mine_mask, reduce=reduce), torch.cat([together[:, :2], torch.zeros(1, 1)], 1)
    )


def test_the_critic_steps_with_the_policy_and_its_optimiser_takes_the_weight_decay(tmp_path, tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.generate = scripted_generate(tokenizer, wrong_answer_rows={1})
    trainer = one_question_trainer(tmp_path, tokenizer, model, 128)
    assert all(group["weight_decay"] == trainer.args.weight_decay for group in trainer.critic_optimizer.param_groups)
    steps = []
    step = trainer.critic_optimizer.step
    trainer.critic_optimizer.step = lambda *a, **k: steps.append(trainer.accelerator.sync_gradients) or step(*a, **k)
    trainer.train()
    assert steps == [True]  # once, at the end of the accumulation window, as the policy's optimiser
