"""Ranks whose episodes end at different turns (#21), run by ``accelerate launch --num_processes 2`` from
``tests/test_distributed.py``: ``rank_safety.py OUT``. Each process writes what it saw to ``<out>/rank<N>.json``.

Alpha's episodes end after two turns, Gamma's after three; each process plays one prompt's group. Under ZeRO-3 or
FSDP every generation turn gathers parameters collectively, so each process must enter the same number of
generation contexts (counted here at TRL's ``unwrap_model_for_generation``, the seam where the gather happens).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import trl.models
from trl import GRPOTrainer

from helpers import cpu_config, rank_policy
from test_rollout import RecordingEngine, qa_dataset, scripted_generate
from zerosearch_trl.rewards import f1_reward
from zerosearch_trl.rollout import make_search_rollout

entered = []
_unwrap = trl.models.unwrap_model_for_generation


@contextmanager
def counting_unwrap(*args, **kwargs):
    entered.append(1)
    with _unwrap(*args, **kwargs) as model:
        yield model


def main(out: Path) -> None:
    trl.models.unwrap_model_for_generation = counting_unwrap
    model, tokenizer = rank_policy(out)
    model.generate = scripted_generate(tokenizer)
    engine = RecordingEngine(seed=0)
    config = cpu_config(
        out / "run",
        per_device_train_batch_size=2,
        num_generations=2,  # one prompt's group per process: one process plays Alpha, the other Gamma
        max_completion_length=400,
        max_steps=2,
        learning_rate=1e-3,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[f1_reward],
        args=config,
        train_dataset=qa_dataset(["Where is Alpha?", "Where is Gamma?"]),
        processing_class=tokenizer,
        # The lockstep path, which ZeRO-3 and FSDP take (under DDP the rollout would generate continuously, each
        # process on its own): what is checked here is that every process enters every turn's generation.
        rollout_func=make_search_rollout(engine, continuous_batching=False),
    )
    trainer.train()
    result = {
        "rank": trainer.accelerator.process_index,
        "generation_contexts": len(entered),
        "fsdp": bool(trainer.is_fsdp_enabled),
        "wrapper": type(trainer.model_wrapped).__name__,
        "questions": sorted({r.question for batch in engine.batches for r in batch}),
        "log_history": trainer.state.log_history,
    }
    (out / f"rank{result['rank']}.json").write_text(json.dumps(result))
    # Leave without tearing down: gloo's process group, freed with the DDP model at interpreter exit, can deadlock
    # on the GIL or abort ("terminate called without an active exception"), a torch teardown race, not the run's.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
