"""``zerosearch-trl eval``: score an agent on QA sets with one or several engines, greedy, every row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerosearch_trl.commands.parsing import command_parser
from zerosearch_trl.evaluation import evaluate, load_eval_datasets, write_evaluation
from zerosearch_trl.evaluation.loop import is_local_path
from zerosearch_trl.evaluation.report import format_score
from zerosearch_trl.prompts import PromptArguments
from zerosearch_trl.rollout.episode import DEFAULT_OBSERVATION_TOKENS, DEFAULT_TURN_TOKENS


@dataclass
class EvalArguments(PromptArguments):
    """``zerosearch-trl eval``: the agent and the QA sets (the engines come from
    :class:`~zerosearch_trl.engines.factory.EngineSettings`)."""

    datasets: str | None = field(
        default=None,
        metadata={"help": "Comma-separated QA sources: jsonl/parquet files, dataset folders or hub ids (required)."},
    )
    model: str = field(default="default", metadata={"help": "Policy: folder (or LoRA adapter folder) or hub id."})
    output_dir: str = field(default="eval", metadata={"help": "Where results.json, predictions.jsonl, report.md go."})
    limit: int | None = field(default=None, metadata={"help": "Score only the first N rows of each dataset."})
    batch_size: int = field(default=16, metadata={"help": "Questions played together."})
    max_turns: int = field(default=2, metadata={"help": "Searches before the answer turn (paper: 2)."})
    max_turn_tokens: int = field(default=DEFAULT_TURN_TOKENS, metadata={"help": "Model tokens per turn (paper: 500)."})
    max_observation_tokens: int = field(
        default=DEFAULT_OBSERVATION_TOKENS, metadata={"help": "Tokens per search result (paper: 500)."}
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={"help": "Tokens per episode, observations included (default: what max_turns searches need)."},
    )
    temperature: float = field(default=0.0, metadata={"help": "0 decodes greedily (default); above 0 samples."})
    policy_backend: str = field(
        default="transformers", metadata={"help": "'transformers' (in process), 'vllm' or 'openai' (a server)."}
    )
    policy_base_url: str | None = field(
        default=None, metadata={"help": "The policy's OpenAI-compatible server (with --policy_backend openai)."}
    )
    seed: int = field(default=0, metadata={"help": "Seeds sampling when --temperature > 0."})


POLICY_BACKENDS = ("transformers", "vllm", "openai")


def check_eval_args(args: EvalArguments) -> None:
    """Raise a clear error for a bad setting, before any model loads."""
    if not args.datasets or not [s for s in args.datasets.split(",") if s.strip()]:
        raise ValueError(
            "--datasets is required: comma-separated QA files, folders or hub ids, e.g. nq.jsonl,hotpotqa.jsonl."
        )
    if args.policy_backend not in POLICY_BACKENDS:
        raise ValueError(f"--policy_backend must be one of {', '.join(POLICY_BACKENDS)}, got {args.policy_backend!r}.")
    if args.policy_backend == "openai" and not args.policy_base_url:
        raise ValueError("--policy_backend openai needs --policy_base_url, e.g. http://localhost:8000/v1.")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}.")
    if is_local_path(args.model) and not Path(args.model).expanduser().exists():
        raise FileNotFoundError(f"--model {args.model} does not exist: give a model or LoRA adapter folder.")


def main(argv: Sequence[str]) -> int:
    """``zerosearch-trl eval --datasets a.jsonl,b.parquet --engine simulated,bm25 [--corpus ...] [flags]``."""
    from zerosearch_trl.engines.factory import EngineSettings, make_engine, split_engine_settings
    from zerosearch_trl.models import resolve_prompt_settings

    args, settings = command_parser("eval", [EvalArguments, EngineSettings]).parse_args_and_config(list(argv))
    check_eval_args(args)
    engine_settings = split_engine_settings(settings)
    prompt = resolve_prompt_settings(args.model, args.prompt_style, args.prefill)  # as trained, unless told
    style = prompt.prompt_style
    tables = load_eval_datasets([s.strip() for s in args.datasets.split(",") if s.strip()], prompt_style=style)
    engines = {one.engine: make_engine(one) for one in engine_settings}
    policy, tokenizer = _cli_policy(args)
    result = evaluate(
        policy,
        tables,
        engines,
        tokenizer=tokenizer,
        max_turns=args.max_turns,
        prefill=prompt.prefill,
        prompt_style=style,
        max_turn_tokens=args.max_turn_tokens,
        max_observation_tokens=args.max_observation_tokens,
        max_completion_length=args.max_completion_length,
        batch_size=args.batch_size,
        temperature=args.temperature,
        limit=args.limit,
        seed=args.seed,
    )
    result.config.update(model=args.model, engine_settings=vars(settings))
    report = write_evaluation(result, args.output_dir)
    for engine_name, block in result.engines.items():
        for name, scores in [*block["datasets"].items(), ("overall", block["overall"])]:
            print(
                f"{engine_name:>10} {name:<24} n={scores['n']:<5} EM={format_score(scores['exact_match'])} "
                f"F1={format_score(scores['f1'])} searches={format_score(scores['mean_searches'])}"
            )
    print(f"Report: {report}")
    return 0


def _cli_policy(args: EvalArguments) -> tuple[Any, Any]:
    """The policy argument of :func:`evaluate` for the CLI's backend, and its tokenizer (``None``: loaded there)."""
    if args.policy_backend == "transformers":
        return args.model, None
    from zerosearch_trl.models import default_model_path, is_default_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    if args.policy_backend == "openai":
        from zerosearch_trl.generation.openai import OpenAIGenerator

        return OpenAIGenerator(args.policy_base_url, tokenizer=tokenizer), tokenizer
    from zerosearch_trl.generation.vllm import VLLMGenerator

    return VLLMGenerator(str(default_model_path()) if is_default_model(args.model) else args.model), tokenizer
