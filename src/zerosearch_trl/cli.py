"""The ``zerosearch-trl`` command line.

Each subcommand is configured by a dataclass whose fields carry ``help`` metadata and is parsed with TRL's
``TrlParser``, so every option works as a flag or from ``--config recipe.yaml``.

    zerosearch-trl probe --n_samples 16 --prompt_style one_shot
    zerosearch-trl make-demo --output_dir demo_task
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trl import TrlParser

from zerosearch_trl import __version__

logger = logging.getLogger("zerosearch_trl")

CONFIG_EPILOG = "Every option can also be set in a YAML recipe given with --config recipe.yaml; flags override it."


def command_parser(command: str, dataclass_types: Sequence[type]) -> TrlParser:
    """TRL's parser for one subcommand: named ``zerosearch-trl COMMAND`` in its usage line, ``--config`` in its help.

    Example:
        >>> command_parser("probe", [ProbeConfig]).prog
        'zerosearch-trl probe'
    """
    return TrlParser(list(dataclass_types), prog=f"zerosearch-trl {command}", epilog=CONFIG_EPILOG)


@dataclass
class ProbeConfig:
    """Sample the policy's first turn on demo (or given) questions and count well-formed protocol actions.

    Use it to choose a prompt style for a model before RL: a policy that never writes a tag gets no reward.
    """

    model: str = field(
        default="default", metadata={"help": "Hub id, local folder, or 'default' (embedded SmolLM2-135M-Instruct)."}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "QA file/folder/hub id; default: the generated demo task."}
    )
    n_samples: int = field(default=16, metadata={"help": "Number of first turns to sample."})
    prompt_style: str = field(
        default="one_shot", metadata={"help": "Policy instruction: 'zero_shot' (paper) or 'one_shot'."}
    )
    prefill: str = field(default="<think>", metadata={"help": "Text prefilled into the assistant turn; '' for none."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (paper: 1.0)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass (paper: 0.95)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Token budget for the turn."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=0, metadata={"help": "Seed for the demo task and for sampling."})
    output_file: str | None = field(default=None, metadata={"help": "Write the counts and samples as JSON here."})


def probe(config: ProbeConfig) -> dict:
    """Run :class:`ProbeConfig`; return ``{"counts": {...}, "shares": {...}, "samples": [...]}``."""
    from zerosearch_trl.data import load_qa_dataset
    from zerosearch_trl.demo import make_demo_task
    from zerosearch_trl.generation.base import GenerationParams
    from zerosearch_trl.models import inference_device, load_model
    from zerosearch_trl.warmstart import well_formed_search_share

    params = GenerationParams(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
    )  # validates before loading
    if config.dataset:
        questions = load_qa_dataset(config.dataset, limit=config.n_samples)["question"]
    else:
        questions = make_demo_task(config.n_samples, seed=config.seed).dataset["question"]
    model, tokenizer = load_model(config.model, device_map=inference_device())
    report = well_formed_search_share(
        model,
        tokenizer,
        list(questions),
        n=config.n_samples,
        prompt_style=config.prompt_style,
        prefill=config.prefill,
        params=params,
        batch_size=config.batch_size,
    )
    return {"config": asdict(config), **report}


@dataclass
class MakeDemoConfig:
    """Write the generated demo task (questions.jsonl + corpus.jsonl) to a folder."""

    output_dir: str = field(default="demo_task", metadata={"help": "Folder to write into."})
    n_questions: int = field(default=256, metadata={"help": "Number of questions."})
    seed: int = field(default=0, metadata={"help": "World seed."})
    two_hop_fraction: float = field(default=0.3, metadata={"help": "Share of two-hop questions."})


@dataclass
class SimulateConfig:
    """Ask the simulated search engine for documents, as the policy would see them."""

    query: str = field(metadata={"help": "The search query."})
    question: str | None = field(default=None, metadata={"help": "The episode's question (shown to the simulator)."})
    answer: list[str] = field(default_factory=list, metadata={"help": "Gold answer(s) (shown in useful mode)."})
    noisy: bool = field(default=False, metadata={"help": "Ask for noisy documents instead of useful ones."})
    top_k: int = field(default=5, metadata={"help": "Documents per query (paper: 5)."})
    model: str = field(default="default", metadata={"help": "Simulator model for the transformers backend."})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server URL (uses that backend)."})
    backend: str | None = field(
        default=None,
        metadata={"help": "'transformers', 'openai' or 'vllm' (default: openai if --base_url, else transformers)."},
    )
    prompt_format: str = field(
        default="prompt_only", metadata={"help": "'prompt_only' or 'finetuned' (a simulator from sft-simulator)."}
    )
    per_document: bool | None = field(
        default=None,
        metadata={"help": "One document per generation (default: on for the embedded 135M model, off otherwise)."},
    )
    temperature: float = field(default=0.8, metadata={"help": "Simulator temperature (paper: 0.8)."})
    max_new_tokens: int = field(default=600, metadata={"help": "Simulator generation budget (paper: ~600)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})


def _run_simulate(argv: Sequence[str]) -> int:
    from zerosearch_trl.engines.base import SearchRequest
    from zerosearch_trl.engines.simulated import SimulatedSearchEngine, default_per_document
    from zerosearch_trl.generation.base import GenerationParams
    from zerosearch_trl.generation.factory import make_generator
    from zerosearch_trl.protocol import format_document

    parser = command_parser("simulate", [SimulateConfig])
    (config,) = parser.parse_args_and_config(list(argv))
    backend = config.backend or ("openai" if config.base_url else "transformers")
    # Fail on a bad setting before a model loads.
    SimulatedSearchEngine.check_settings(top_k=config.top_k, prompt_format=config.prompt_format)
    GenerationParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature)
    generator = make_generator(backend, model=config.model, base_url=config.base_url)
    per_document = config.per_document
    if per_document is None:
        per_document = default_per_document(backend, config.model)
    engine = SimulatedSearchEngine(
        generator,
        per_document=per_document,
        top_k=config.top_k,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        prompt_format=config.prompt_format,
        seed=config.seed,
    )
    request = SearchRequest(config.query, question=config.question, golden_answers=tuple(config.answer))
    (documents,) = engine.search([request], modes=["noisy" if config.noisy else "useful"])
    for i, document in enumerate(documents, start=1):
        flags = [document.meta["label"]]
        if document.meta.get("contains_answer"):
            flags.append("contains answer")
        if document.meta.get("fallback"):
            flags.append("fallback")
        print(f"{format_document(i, document)}  [{', '.join(flags)}]")
    return 0


def _run_probe(argv: Sequence[str]) -> int:
    (config,) = command_parser("probe", [ProbeConfig]).parse_args_and_config(list(argv))
    report = probe(config)
    for sample in report["samples"][:4]:
        print(
            f"--- {sample['question']}\n{config.prefill}{sample['generated']}\n=> {sample['action']}: {sample['content']!r}"
        )
    print(json.dumps({"counts": report["counts"], "shares": report["shares"]}, indent=2))
    if config.output_file:
        Path(config.output_file).write_text(json.dumps(report, indent=2))
    return 0


def _run_make_demo(argv: Sequence[str]) -> int:
    from zerosearch_trl.demo import make_demo_task

    (config,) = command_parser("make-demo", [MakeDemoConfig]).parse_args_and_config(list(argv))
    task = make_demo_task(config.n_questions, config.seed, two_hop_fraction=config.two_hop_fraction)
    folder = task.save(config.output_dir)
    print(f"Wrote {len(task.dataset)} questions and {len(task.corpus)} passages to {folder}")
    return 0


def _run_train(argv: Sequence[str]) -> int:
    from zerosearch_trl.train import run_cli

    return run_cli(argv)


def _run_eval(argv: Sequence[str]) -> int:
    from zerosearch_trl.evaluation import run_cli

    return run_cli(argv)


def _run_collect(argv: Sequence[str]) -> int:
    from zerosearch_trl.simulator_sft import run_collect_cli

    return run_collect_cli(argv)


def _run_sft_simulator(argv: Sequence[str]) -> int:
    from zerosearch_trl.simulator_sft import run_sft_cli

    return run_sft_cli(argv)


def _run_check_simulator(argv: Sequence[str]) -> int:
    from zerosearch_trl.simulator_check import run_cli

    return run_cli(argv)


def _run_serve(argv: Sequence[str]) -> int:
    from zerosearch_trl.serve import run_cli

    return run_cli(argv)


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "train": (_run_train, "GRPO with the search rollout, a simulated engine and a noise curriculum; writes a report"),
    "eval": (_run_eval, "score an agent on QA sets with one or several engines, greedy, every row; writes a report"),
    "collect-simulator-data": (
        _run_collect,
        "play QA questions against a real engine; keep labelled (query, documents)",
    ),
    "sft-simulator": (_run_sft_simulator, "fine-tune a simulator (SFTTrainer + LoRA/QLoRA) on collected pairs"),
    "check-simulator": (_run_check_simulator, "score a simulator: useful-answer rate, noisy leak rate, format"),
    "simulate": (_run_simulate, "print the documents the simulated search engine writes for a query"),
    "probe": (_run_probe, "share of well-formed search/answer actions a model writes with a given prompt"),
    "make-demo": (_run_make_demo, "write the generated fictional QA task and its corpus to a folder"),
    "serve": (_run_serve, "serve bm25, dense, simulated or hybrid search over HTTP (Search-R1's /retrieve API)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zerosearch-trl``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"zerosearch-trl {__version__}\n\nusage: zerosearch-trl COMMAND [--help] [--config recipe.yaml] [options]\n\ncommands:"
        )
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<24}{summary}")
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"zerosearch-trl: unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    runner, _ = COMMANDS[argv[0]]
    return runner(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
