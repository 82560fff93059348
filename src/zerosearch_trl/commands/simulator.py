"""The simulator's SFT stage from the shell: ``collect-simulator-data``, ``sft-simulator``, ``check-simulator``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerosearch_trl.commands.parsing import command_parser
from zerosearch_trl.engines.factory import EngineSettings, make_engine
from zerosearch_trl.models import resolve_prompt_settings
from zerosearch_trl.prompts import PromptArguments
from zerosearch_trl.simulator.check import check_simulator, write_simulator_check
from zerosearch_trl.simulator.collect import LABEL_COLUMNS, collect_simulator_data
from zerosearch_trl.simulator.sft import check_sft_settings, make_simulator_sft_dataset, train_simulator

logger = logging.getLogger(__name__)


@dataclass
class CollectArguments(PromptArguments):
    """``zerosearch-trl collect-simulator-data``: who searches, on which questions (the engine comes from
    :class:`~zerosearch_trl.engines.factory.EngineSettings`, BM25 over the demo corpus by default)."""

    datasets: str | None = field(
        default=None, metadata={"help": "Comma-separated QA sources with gold answers (default: the demo task)."}
    )
    model: str = field(default="default", metadata={"help": "The policy that searches: folder or hub id."})
    output_dir: str = field(default="simulator-data", metadata={"help": "Where pairs/ and pairs.jsonl go."})
    limit: int | None = field(default=64, metadata={"help": "Questions per dataset (default 64; None: all)."})
    correct: str = field(default="exact_match", metadata={"help": "Outcome score: exact_match, cover_em or f1."})
    temperature: float = field(default=0.0, metadata={"help": "Policy sampling temperature (0: greedy)."})
    batch_size: int = field(default=16, metadata={"help": "Questions played together."})
    max_turn_tokens: int = field(
        default=128, metadata={"help": "Policy tokens per turn (the paper's scale: 500; 128 suits a small policy)."}
    )
    max_observation_tokens: int = field(
        default=256, metadata={"help": "Tokens per search result the policy reads (the paper's scale: 500)."}
    )


@dataclass
class SimulatorSFTArguments:
    """``zerosearch-trl sft-simulator``: fine-tune a simulator on collected pairs (collected first when none are
    given: the embedded policy against BM25 over the demo corpus; for a real corpus, run
    ``collect-simulator-data --corpus ...`` first and pass ``--pairs``)."""

    pairs: str | None = field(
        default=None, metadata={"help": "pairs.jsonl or a pairs/ folder from collect-simulator-data."}
    )
    model: str = field(default="default", metadata={"help": "The model to turn into a simulator."})
    output_dir: str = field(default="simulator", metadata={"help": "Adapter (and merged/) folder."})
    labelling: str | None = field(
        default=None,
        metadata={
            "help": "'outcome' (the paper: the episode's answer was right) or 'contains_answer' (a document holds a "
            "gold answer); default: outcome for --pairs, contains_answer for the pairs it collects itself (the "
            "embedded policy rarely answers right, so outcome would label every pair noisy)."
        },
    )
    top_k: int = field(default=5, metadata={"help": "Documents per target: the engine's top_k at training time."})
    words_per_doc: int = field(default=30, metadata={"help": "Words per target document (paper: 30)."})
    max_steps: int = field(default=100, metadata={"help": "SFT optimisation steps."})
    learning_rate: float = field(default=2e-4, metadata={"help": "LoRA learning rate."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "SFT batch size."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimisation step."})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations in backward: less memory, slower (default: TRL's, on)."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling (alpha / r multiplies the update)."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA (needs a CUDA GPU)."})
    merge: bool = field(default=True, metadata={"help": "Also write the merged model to output_dir/merged."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an output_dir that holds another run."})
    report_to: str = field(default="none", metadata={"help": "Trainer loggers (wandb, trackio, tensorboard)."})


def collect_main(argv: Sequence[str]) -> int:
    """``zerosearch-trl collect-simulator-data [--datasets ...] [--engine bm25 --corpus ...] [flags]``."""

    parser = command_parser("collect-simulator-data", [CollectArguments, EngineSettings])
    parser.set_defaults(engine="bm25")
    args, settings = parser.parse_args_and_config(list(argv))
    pairs = _collect(args, settings)
    print(f"{len(pairs)} pairs ({sum(r == 'useful' for r in pairs['label'])} useful) in {args.output_dir}")
    return 0


def sft_main(argv: Sequence[str]) -> int:
    """``zerosearch-trl sft-simulator [--pairs pairs.jsonl] [--model M] [flags]``."""
    import datasets as hf_datasets

    (args,) = command_parser("sft-simulator", [SimulatorSFTArguments]).parse_args_and_config(list(argv))
    check_sft_settings(args.load_in_4bit, args.max_steps, args.learning_rate, args.lora_r)
    out = Path(args.output_dir)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:  # before collecting or loading anything
        raise ValueError(f"{out} already holds files (another run?): choose a new --output_dir or pass --overwrite.")
    if args.pairs:
        source = Path(args.pairs)
        if not source.exists():
            raise FileNotFoundError(f"--pairs {source} does not exist (make it with collect-simulator-data).")
        pairs = (
            hf_datasets.load_from_disk(str(source))
            if source.is_dir()
            else hf_datasets.load_dataset("json", data_files=str(source), split="train")
        )
    else:  # the documented default: the embedded policy against BM25 over the generated demo corpus
        logger.info("No --pairs: collecting them first (embedded policy, BM25 over the demo corpus).")
        collect_args = CollectArguments(output_dir=str(out / "pairs-collected"))
        pairs = _collect(collect_args, EngineSettings(engine="bm25", search_top_k=args.top_k))
    labelling = args.labelling or ("outcome" if args.pairs else "contains_answer")
    try:
        sft = make_simulator_sft_dataset(pairs, labelling=labelling, top_k=args.top_k, words_per_doc=args.words_per_doc)
    except ValueError as error:  # the collection cannot make a dataset: say why and what to do, in one line
        print(f"zerosearch-trl sft-simulator: {_dataset_problem(pairs, labelling, error)}", file=sys.stderr)
        return 2
    folder = train_simulator(
        args.model,
        sft,
        output_dir=str(out),
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        load_in_4bit=args.load_in_4bit,
        merge=args.merge,
        overwrite=True,  # checked above, before the collection wrote into it
        report_to=args.report_to,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        **({} if args.gradient_checkpointing is None else {"gradient_checkpointing": args.gradient_checkpointing}),
    )
    print(f"Simulator trained on {len(sft)} rows: load it from {folder} with prompt_format='finetuned'.")
    return 0


def _dataset_problem(pairs: Any, labelling: str, error: ValueError) -> str:
    """Why collected pairs make no SFT dataset, and the fix, in one line."""
    column = LABEL_COLUMNS.get(labelling)
    if column is None or column not in getattr(pairs, "column_names", []):
        return str(error)
    counts = {label: sum(value == label for value in pairs[column]) for label in ("useful", "noisy")}
    if all(counts.values()):
        return str(error)
    other = "contains_answer" if labelling == "outcome" else "outcome"
    return (
        f"{len(pairs)} collected pairs, {counts['useful']} useful and {counts['noisy']} noisy under "
        f"--labelling {labelling}, and SFT needs both: pass --labelling {other}, collect more questions "
        "(collect-simulator-data --limit), or collect with a policy that answers more of them (--model)."
    )


def _collect(args: CollectArguments, settings: Any) -> Any:
    engine = make_engine(settings)
    if args.datasets:
        sources: Any = [s.strip() for s in args.datasets.split(",") if s.strip()]
    else:
        from zerosearch_trl.demo import make_demo_task

        # The demo world that the default engine's corpus describes (engine_seed).
        sources = {"demo": make_demo_task(seed=settings.engine_seed).dataset}
    prompt = resolve_prompt_settings(args.model, args.prompt_style, args.prefill)  # as the policy was trained
    pairs = collect_simulator_data(
        args.model,
        sources,
        engine,
        correct=args.correct,
        temperature=args.temperature,
        limit=args.limit,
        prompt_style=prompt.prompt_style,
        prefill=prompt.prefill,
        batch_size=args.batch_size,
        max_turn_tokens=args.max_turn_tokens,
        max_observation_tokens=args.max_observation_tokens,
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs.save_to_disk(str(out / "pairs"))
    pairs.to_json(str(out / "pairs.jsonl"), lines=True)
    return pairs


@dataclass
class CheckArguments:
    """``zerosearch-trl check-simulator``: score a simulator on held-out questions."""

    model: str = field(default="default", metadata={"help": "The simulator: folder (e.g. simulator/merged) or hub id."})
    questions: str | None = field(
        default=None, metadata={"help": "Held-out QA file with gold answers (default: 32 demo-task questions)."}
    )
    output_dir: str = field(default="simulator-check", metadata={"help": "Where the JSON and markdown go."})
    prompt_format: str = field(default="prompt_only", metadata={"help": "'prompt_only', or 'finetuned' after SFT."})
    top_k: int = field(default=5, metadata={"help": "Documents per result."})
    words_per_doc: int = field(default=30, metadata={"help": "Words per document."})
    per_document: bool | None = field(
        default=None, metadata={"help": "One document per generation (default: on for the embedded model)."}
    )
    limit: int | None = field(default=32, metadata={"help": "Questions used (None: all)."})


def check_main(argv: Sequence[str]) -> int:
    """``zerosearch-trl check-simulator --model simulator/merged --prompt_format finetuned [flags]``."""
    (args,) = command_parser("check-simulator", [CheckArguments]).parse_args_and_config(list(argv))
    if args.questions is not None and not Path(args.questions).exists():
        raise FileNotFoundError(f"--questions {args.questions} does not exist.")
    if args.questions:
        questions: Any = args.questions
    else:
        from zerosearch_trl.demo import make_demo_task

        # Held out from what the default collection plays: another seed, another world.
        questions = make_demo_task(n_questions=args.limit or 32, seed=1).dataset
    report = check_simulator(
        args.model,
        questions,
        top_k=args.top_k,
        words_per_doc=args.words_per_doc,
        prompt_format=args.prompt_format,
        per_document=args.per_document,
        limit=args.limit,
    )
    path = write_simulator_check(report, args.output_dir)
    for key in ("useful_answer_rate", "noisy_leak_rate", "format_valid_rate", "distinct_documents"):
        print(f"{key:<20} {report[key]:.3f}")
    print(f"Report: {path}")
    return 0
