"""Small commands around the policy and the simulator: ``probe``, ``simulate``, ``make-demo``.

zerosearch-trl probe --n_samples 16 --prompt_style one_shot
zerosearch-trl make-demo --output_dir demo_task
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zerosearch_trl.commands.parsing import command_parser
from zerosearch_trl.prompts import PromptArguments


@dataclass
class ProbeConfig(PromptArguments):
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
    from zerosearch_trl.models import inference_device, load_model, resolve_prompt_settings
    from zerosearch_trl.training.probe import well_formed_search_share

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
    settings = resolve_prompt_settings(config.model, config.prompt_style, config.prefill)
    model, tokenizer = load_model(config.model, device_map=inference_device())
    report = well_formed_search_share(
        model,
        tokenizer,
        list(questions),
        n=config.n_samples,
        prompt_style=settings.prompt_style,
        prefill=settings.prefill,
        params=params,
        batch_size=config.batch_size,
    )
    return {"config": {**asdict(config), "prompt_style": settings.prompt_style, "prefill": settings.prefill}, **report}


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
        default="prompt_only",
        metadata={
            "help": "'prompt_only', 'finetuned' (a simulator from sft-simulator) or 'zerosearch' (the released simulators)."
        },
    )
    per_document: bool | None = field(
        default=None,
        metadata={"help": "One document per generation (default: on for the embedded 135M model, off otherwise)."},
    )
    temperature: float = field(default=0.8, metadata={"help": "Simulator temperature (paper: 0.8)."})
    max_new_tokens: int = field(default=600, metadata={"help": "Simulator generation budget (paper: ~600)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})


def simulate_main(argv: Sequence[str]) -> int:
    """``zerosearch-trl simulate --query Q [--question ...] [--answer ...] [--noisy] [--base_url URL]``."""
    from zerosearch_trl.engines.base import SearchRequest
    from zerosearch_trl.engines.simulated import SimulatedSearchEngine, default_per_document
    from zerosearch_trl.generation.base import GenerationParams
    from zerosearch_trl.generation.factory import make_generator
    from zerosearch_trl.protocol import format_document

    parser = command_parser("simulate", [SimulateConfig])
    (config,) = parser.parse_args_and_config(list(argv))
    backend = config.backend or ("openai" if config.base_url else "transformers")
    # Fail on a bad setting before a model loads.
    SimulatedSearchEngine.check_settings(
        top_k=config.top_k, prompt_format=config.prompt_format, per_document=config.per_document
    )
    GenerationParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature)
    generator = make_generator(backend, model=config.model, base_url=config.base_url)
    per_document = config.per_document
    if per_document is None:
        per_document = default_per_document(backend, config.model, config.prompt_format)
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


def probe_main(argv: Sequence[str]) -> int:
    """``zerosearch-trl probe [--model M] [--n_samples N] [--prompt_style one_shot]``."""
    (config,) = command_parser("probe", [ProbeConfig]).parse_args_and_config(list(argv))
    report = probe(config)
    for sample in report["samples"][:4]:
        print(
            f"--- {sample['question']}\n{report['config']['prefill'] or ''}{sample['generated']}\n"
            f"=> {sample['action']}: {sample['content']!r}"
        )
    print(json.dumps({"counts": report["counts"], "shares": report["shares"]}, indent=2))
    if config.output_file:
        Path(config.output_file).write_text(json.dumps(report, indent=2))
    return 0


def make_demo_main(argv: Sequence[str]) -> int:
    """``zerosearch-trl make-demo [--output_dir demo_task] [--n_questions N]``."""
    from zerosearch_trl.demo import make_demo_task

    (config,) = command_parser("make-demo", [MakeDemoConfig]).parse_args_and_config(list(argv))
    task = make_demo_task(config.n_questions, config.seed, two_hop_fraction=config.two_hop_fraction)
    folder = task.save(config.output_dir)
    print(f"Wrote {len(task.dataset)} questions and {len(task.corpus)} passages to {folder}")
    return 0
