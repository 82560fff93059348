"""One GRPO step on the continuous path under DDP, run by ``accelerate launch --num_processes 2`` from
``tests/test_distributed.py``: each process generates its own episodes with the real continuous-batching generator
(a tiny random Llama: no collective per turn), then both take part in the step. Writes ``<out>/rank<N>.json``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from trl import GRPOTrainer

from helpers import cpu_config, rank_policy
from test_rollout import RecordingEngine, qa_dataset
from zerosearch_trl.generation.continuous import ContinuousTransformersGenerator
from zerosearch_trl.rewards import f1_reward
from zerosearch_trl.rollout import make_search_rollout, policy

made: list[ContinuousTransformersGenerator] = []


def spy(model, tokenizer, **kwargs):
    made.append(ContinuousTransformersGenerator(model, tokenizer, **kwargs))
    return made[-1]


def main(out: Path) -> None:
    policy.ContinuousTransformersGenerator = spy
    model, tokenizer = rank_policy(out)
    engine = RecordingEngine()
    config = cpu_config(
        out / "run", per_device_train_batch_size=2, num_generations=2, max_completion_length=145, max_steps=1
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[f1_reward],
        args=config,
        train_dataset=qa_dataset(["Where is Alpha?", "Where is Gamma?"]),
        processing_class=tokenizer,
        rollout_func=make_search_rollout(engine, max_turns=1, max_turn_tokens=24, max_observation_tokens=96),
    )
    trainer.train()
    result = {
        "rank": trainer.accelerator.process_index,
        "wrapper": type(trainer.model_wrapped).__name__,
        "decode_steps": [g.stats["decode_steps"] for g in made],
        "reused_tokens": [g.stats["reused_tokens"] for g in made],
        "checksum": sum(p.detach().double().sum().item() for p in model.parameters()),
        "log_history": trainer.state.log_history,
    }
    (out / f"rank{result['rank']}.json").write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # as in search_step.py: no gloo teardown race at exit


if __name__ == "__main__":
    main(Path(sys.argv[1]))
