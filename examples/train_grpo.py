"""GRPO for a search agent against a simulated search engine, in one page: read it, then adapt it.

It is the ``zerosearch-trl train`` job without the options: the embedded SmolLM2-135M-Instruct learns the demo
task (fictional facts that only search reveals); a frozen copy of it writes the search results; the noise
probability rises over training. Runs on CPU as it is, and under ``accelerate launch`` on GPUs:

    python examples/train_grpo.py
    accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/train_grpo.py
"""

import torch
from trl import GRPOConfig, GRPOTrainer

import zerosearch_trl as zs


def main(max_steps: int = 4, n_questions: int = 128, warm_start_steps: int = 24, output_dir: str = "runs/train_grpo"):
    # The data: rows with a chat `prompt`, the `question` and its `golden_answers` (load_qa_dataset reads NQ, HotpotQA...).
    task = zs.make_demo_task(n_questions=n_questions, prompt_style="one_shot")

    # The policy, and a short warm start: a 135M model must first see well-formed search episodes.
    policy, tokenizer = zs.load_default_model()
    policy = zs.warm_start(
        policy,
        tokenizer,
        zs.make_warmstart_dataset(task),
        output_dir=f"{output_dir}/warm_start",
        max_steps=warm_start_steps,
    )

    # The simulated search engine: an LLM writes useful or noisy documents (here a frozen copy of the initial model).
    simulator = zs.TransformersGenerator(*zs.load_default_model(), batch_size=64)
    engine = zs.SimulatedSearchEngine(simulator, per_document=True, seed=0)

    config = GRPOConfig(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=1024,  # >= 2 x (128 + 256) + 128 + 1: two searches and the answer always fit
        learning_rate=5e-6,
        beta=0.0,  # TRL loads the KL reference from the model path: the pre-warm-start weights here (`train` reloads)
        logging_steps=1,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
    )
    trainer = GRPOTrainer(
        model=policy,
        processing_class=tokenizer,
        args=config,
        train_dataset=task.dataset,
        reward_funcs=[zs.f1_reward, zs.format_reward],  # add your own: any function with TRL's reward signature
        # <search> -> <information> -> <answer>; 128 model tokens per turn, 256 per search result
        rollout_func=zs.make_search_rollout(engine, max_turns=2, max_turn_tokens=128, max_observation_tokens=256),
        callbacks=[zs.TrainingGuardCallback()],  # warns on NaN rewards, collapse...; skips NaN-gradient steps
    )
    if torch.cuda.is_available():
        zs.disable_cudnn_attention()  # its bf16 kernel turns left-padded rows into NaN gradients
    # The curriculum: noise probability from 0 to 0.5 on the paper's exponential schedule (base 4).
    zs.CurriculumCallback(engine, zs.ExponentialSchedule(p_start=0.0, p_end=0.5, base=4)).attach(trainer)
    trainer.train()
    trainer.save_model()


if __name__ == "__main__":
    main()
