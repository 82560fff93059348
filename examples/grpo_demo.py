"""A short, real GRPO run of the embedded SmolLM2-135M-Instruct against the simulated search engine, on CPU.

The policy learns on the generated demo task (fictional facts: only search finds the answers); a frozen copy of
the same model writes the search results. Two optimisation steps take a few minutes on two cores.

    python examples/grpo_demo.py --steps 2 --output_dir runs/grpo-demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trl import GRPOConfig, GRPOTrainer

import zerosearch_trl as zs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=320)
    parser.add_argument("--noise_prob", type=float, default=0.2)
    parser.add_argument("--output_dir", default="runs/grpo-demo")
    args = parser.parse_args()

    task = zs.make_demo_task(n_questions=args.questions, seed=0, prompt_style="one_shot")
    policy, tokenizer = zs.load_default_model()
    simulator = zs.TransformersGenerator(*zs.load_default_model(), batch_size=64)  # frozen copy
    engine = zs.SimulatedSearchEngine(simulator, per_document=True, noise_prob=args.noise_prob, seed=0)
    config = GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        learning_rate=1e-6,  # the paper's
        temperature=1.0,
        top_p=0.95,
        beta=0.001,  # the paper's KL coefficient
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=policy,
        processing_class=tokenizer,
        train_dataset=task.dataset,
        reward_funcs=[zs.f1_reward, zs.format_reward],
        rollout_func=zs.make_search_rollout(engine, max_turns=2),
        args=config,
    )
    trainer.train()
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    summary = {"steps": len(history), "log": history, "simulator": engine.stats.as_dict()}
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    for entry in history:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()
               if k.startswith(("rewards/", "search/", "loss", "step", "completions/mean_length"))})
    print(f"Wrote {args.output_dir}/summary.json")


if __name__ == "__main__":
    main()
