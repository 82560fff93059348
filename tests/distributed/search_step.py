"""Two training steps with the search rollout, run by ``accelerate launch --num_processes 2`` from
``tests/test_distributed.py``: ``search_step.py OUT grpo|reinforce|ppo``. Each process writes what it saw to
``<out>/rank<N>.json``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from trl import GRPOTrainer

from helpers import cpu_config, rank_policy
from test_rollout import RecordingEngine, qa_dataset, row_scripted_rollout, scripted_generate
from zerosearch_trl.rewards import f1_reward
from zerosearch_trl.training.ppo import SearchPPOTrainer
from zerosearch_trl.training.ppo_config import SearchPPOConfig
from zerosearch_trl.training.reinforce import SearchReinforceConfig, SearchReinforceTrainer

TRAINERS = {
    "grpo": (SearchReinforceConfig, GRPOTrainer),  # GRPOConfig plus a field GRPO never reads
    "reinforce": (SearchReinforceConfig, SearchReinforceTrainer),
    "ppo": (SearchPPOConfig, SearchPPOTrainer),
}


def main(out: Path, algorithm: str) -> None:
    model, tokenizer = rank_policy(out)
    model.generate = scripted_generate(tokenizer, wrong_answer_rows={1, 3})
    engine = RecordingEngine()
    rollout = row_scripted_rollout(engine)
    config_class, trainer_class = TRAINERS[algorithm]
    config = cpu_config(
        out / "run",
        config_class,
        per_device_train_batch_size=4,
        num_generations=4,  # a group spans both processes: the rewards are gathered across them
        max_completion_length=160,
        max_steps=2,
        learning_rate=1e-2,
        beta=0.001,
    )
    trainer = trainer_class(
        model=model,
        reward_funcs=[f1_reward],
        args=config,
        train_dataset=qa_dataset(["Where is Alpha?", "Where is Beta?"]),
        processing_class=tokenizer,
        rollout_func=rollout,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    result = {
        "rank": trainer.accelerator.process_index,
        "num_processes": trainer.accelerator.num_processes,
        "changed": sum(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters()),
        "checksum": checksum,
        "critic_checksum": (
            sum(p.detach().double().sum().item() for p in trainer.critic.parameters()) if algorithm == "ppo" else 0.0
        ),
        "queries": [[r.question for r in batch] for batch in engine.batches],
        "log_history": trainer.state.log_history,
    }
    (out / f"rank{result['rank']}.json").write_text(json.dumps(result))
    # Leave without tearing down: gloo's process group, freed with the DDP model at interpreter exit, can deadlock
    # on the GIL or abort ("terminate called without an active exception"), a torch teardown race, not the run's.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
