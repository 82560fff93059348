"""Simulator SFT, the paper's first stage: turn an LLM into a search engine that writes useful or noisy documents.

1. :func:`collect_simulator_data` runs a policy over QA questions against a REAL engine, with the training protocol
   (it is :func:`~zerosearch_trl.evaluate` underneath), and keeps every (query, documents) pair with its episode's
   question and gold answers. Labels as in the paper: pairs from episodes that reached a correct answer are
   ``useful``, the others ``noisy``; ``doc_label`` is the alternative, ``useful`` when a document contains a gold
   answer. Provenance (engine, model, date) is kept on every row.
2. :func:`make_simulator_sft_dataset` turns pairs into TRL conversational prompt/completion rows. The prompt is the
   one :class:`~zerosearch_trl.SimulatedSearchEngine` sends at training time with ``prompt_format="finetuned"``
   (both come from :func:`~zerosearch_trl.prompts.simulator_messages`); the completion is the real documents in the
   simulator's output format. Useful and noisy rows are balanced and queries deduplicated.
3. :func:`train_simulator`: TRL ``SFTTrainer`` with a LoRA adapter (QLoRA on a GPU when asked), loss on the
   completion only; saves the adapter and, with ``merge=True``, a full model folder to serve or to load into
   ``SimulatedSearchEngine``.

:func:`~zerosearch_trl.simulator_check.check_simulator` then tells whether the simulator is good enough to train on.

Example:
    >>> import zerosearch_trl as zs
    >>> pairs = zs.collect_simulator_data("default", ["nq.jsonl"], zs.BM25Engine.load("index/"))  # doctest: +SKIP
    >>> sft = zs.make_simulator_sft_dataset(pairs)  # doctest: +SKIP
    >>> zs.train_simulator("default", sft, output_dir="simulator", merge=True)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zerosearch_trl.engines.base import SearchEngine
from zerosearch_trl.prompts import SIMULATOR_OUTPUT_FORMAT, simulator_messages

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

Labelling = Literal["outcome", "contains_answer"]
LABEL_COLUMNS = {"outcome": "label", "contains_answer": "doc_label"}
"""Which column holds each labelling: the episode's outcome (the paper) or whether a document holds a gold answer."""


def collect_simulator_data(
    model: Any,
    datasets: Any,
    engine: SearchEngine,
    *,
    tokenizer: Any = None,
    correct: str = "exact_match",
    temperature: float = 0.0,
    **evaluate_kwargs: Any,
) -> datasets.Dataset:
    """Play QA questions against a real ``engine`` and keep every (query, documents) pair, labelled.

    Args:
        model: the policy that searches (anything :func:`~zerosearch_trl.evaluate` takes; the embedded model by
            default).
        datasets: QA sources with gold answers (as for :func:`~zerosearch_trl.evaluate`).
        engine: the real engine (BM25, dense, web, remote).
        tokenizer: the policy's tokenizer, when ``model`` is loaded or a generator.
        correct: the score that decides an episode's outcome: ``"exact_match"`` (the paper), ``"cover_em"`` or
            ``"f1"`` (correct when 1.0 / above 0.5).
        temperature: 0 decodes greedily; sampling (e.g. 1.0) gives more varied queries over repeated passes.
        **evaluate_kwargs: ``max_turns``, ``batch_size``, ``limit``, ``prompt_style``...

    Returns:
        A ``datasets.Dataset`` with ``query``, ``question``, ``golden_answers``, ``documents`` (``title``, ``text``,
        ``contains_answer``), ``label`` (outcome), ``doc_label`` (contains a gold answer), ``data_source``,
        ``engine``, ``model``, ``collected_at``.

    Raises:
        ValueError: the engine returned no document for any query (nothing to learn from), or a bad ``correct``.

    Example:
        >>> import zerosearch_trl as zs
        >>> task = zs.make_demo_task(n_questions=16)
        >>> engine = zs.BM25Engine.from_corpus(task.corpus, top_k=5)
        >>> pairs = collect_simulator_data("default", task.dataset, engine, prompt_style="one_shot")  # doctest: +SKIP
        >>> pairs.column_names[:5]  # doctest: +SKIP
        ['query', 'question', 'golden_answers', 'documents', 'label']
    """
    import datasets as hf_datasets

    from zerosearch_trl.evaluation import evaluate

    if correct not in ("exact_match", "cover_em", "f1"):
        raise ValueError(f"correct must be 'exact_match', 'cover_em' or 'f1', got {correct!r}.")
    result = evaluate(model, datasets, engine, tokenizer=tokenizer, temperature=temperature, **evaluate_kwargs)
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    model_name = result.config["model"]
    rows = []
    threshold = 0.5 if correct == "f1" else 1.0
    for row in result.predictions:
        outcome = "useful" if (row[correct] or 0.0) >= threshold else "noisy"
        for query, documents in zip(row["searches"], row["documents"]):
            real = [d for d in documents if d.get("text", "").strip()]
            if not real:
                continue
            rows.append(
                {
                    "query": query,
                    "question": row["question"],
                    "golden_answers": list(row["golden_answers"]),
                    "documents": [
                        {"title": d["title"], "text": d["text"], "contains_answer": bool(d.get("contains_answer"))}
                        for d in real
                    ],
                    "label": outcome,
                    "doc_label": "useful" if any(d.get("contains_answer") for d in real) else "noisy",
                    "data_source": row["dataset"],
                    "engine": row["engine"],
                    "model": model_name,
                    "collected_at": when,
                }
            )
    if not rows:
        searched = sum(len(r["searches"]) for r in result.predictions)
        raise ValueError(
            f"No (query, documents) pair to learn from: the policy searched {searched} times over "
            f"{len(result.predictions)} questions and the {next(iter(result.engines))} engine returned no document "
            "text. Check the engine (its corpus or index) and that the policy searches (try the warm-started model)."
        )
    return hf_datasets.Dataset.from_list(rows)


def simulator_target(documents: Sequence[dict[str, Any]], words_per_doc: int = 30) -> str:
    """Real documents in the simulator's output format, each cut to ``words_per_doc`` words.

    One document is written as the one-result prompt asks (``(Title: ...) text``), several as numbered lines;
    either way the target starts with the prefill that the engine puts in the assistant turn.

    Example:
        >>> docs = [{"title": "Lyon", "text": "Lyon is a city in France."}, {"title": "Nice", "text": "Nice too."}]
        >>> print(simulator_target(docs, words_per_doc=3))
        Doc 1 (Title: Lyon) Lyon is a
        Doc 2 (Title: Nice) Nice too.
        >>> simulator_target(docs[:1], words_per_doc=3)
        '(Title: Lyon) Lyon is a'
    """
    lines = [
        SIMULATOR_OUTPUT_FORMAT.format(index=i, title=d["title"], text=" ".join(str(d["text"]).split()[:words_per_doc]))
        for i, d in enumerate(documents, start=1)
    ]
    if len(lines) == 1:
        return lines[0].removeprefix("Doc 1 ")
    return "\n".join(lines)


def make_simulator_sft_dataset(
    pairs: Any,
    *,
    labelling: Labelling = "outcome",
    top_k: int = 5,
    words_per_doc: int = 30,
    balance: bool = True,
    dedupe: bool = True,
    seed: int = 0,
) -> datasets.Dataset:
    """Collected pairs -> TRL conversational prompt/completion rows for the simulator.

    Args:
        pairs: from :func:`collect_simulator_data` (a ``Dataset`` or a list of its rows).
        labelling: ``"outcome"`` (the paper: the episode's answer was correct) or ``"contains_answer"``.
        top_k: documents per target, the engine's ``top_k`` at training time (its prompt asks for that many);
            pairs with fewer documents are left out.
        words_per_doc: words per target document (the engine's ``words_per_doc``).
        balance: keep as many useful as noisy rows (the larger side is subsampled, seeded).
        dedupe: keep one row per (query, label).
        seed: seeds the balancing.

    Returns:
        A ``datasets.Dataset`` with ``prompt`` (the user message ``SimulatedSearchEngine`` sends with
        ``prompt_format="finetuned"``), ``completion`` (the assistant message) and ``label``.

    Example:
        >>> docs = [{"title": "Lyon", "text": "Lyon is a city in France."}]
        >>> pair = {"query": "Lyon country", "question": "Where is Lyon?", "golden_answers": ["France"], "documents": docs}
        >>> sft = make_simulator_sft_dataset([{**pair, "label": "useful"}, {**pair, "label": "noisy"}], top_k=1)
        >>> sorted(sft["label"]), sft[0]["completion"]
        (['noisy', 'useful'], [{'role': 'assistant', 'content': '(Title: Lyon) Lyon is a city in France.'}])
    """
    import datasets as hf_datasets

    if labelling not in LABEL_COLUMNS:
        raise ValueError(f"labelling must be 'outcome' or 'contains_answer', got {labelling!r}.")
    column = LABEL_COLUMNS[labelling]
    rows = list(pairs)
    if not rows:
        raise ValueError("No collected pairs: run collect_simulator_data first.")
    short = sum(len(row["documents"]) < top_k for row in rows)
    rows = [row for row in rows if len(row["documents"]) >= top_k]
    if short:
        logger.info("Left out %d pairs with fewer than top_k=%d documents.", short, top_k)
    if not rows:
        raise ValueError(f"No collected pair has top_k={top_k} documents: collect with an engine of top_k >= {top_k}.")
    if dedupe:
        seen: set[tuple[str, str]] = set()
        unique = []
        for row in rows:
            key = (" ".join(row["query"].lower().split()), row[column])
            if key not in seen:
                seen.add(key)
                unique.append(row)
        rows = unique
    by_label = {label: [r for r in rows if r[column] == label] for label in ("useful", "noisy")}
    if balance:
        if not all(by_label.values()):
            missing = next(label for label, part in by_label.items() if not part)
            raise ValueError(
                f"balance=True needs both labels, but no pair is {missing!r} under labelling={labelling!r}: "
                "collect more questions, use the other labelling, or pass balance=False."
            )
        n = min(len(part) for part in by_label.values())
        rng = random.Random(seed)
        by_label = {label: rng.sample(part, n) for label, part in by_label.items()}
    out = []
    for label, part in by_label.items():
        for row in part:
            documents = list(row["documents"])[:top_k]
            prompt = simulator_messages(
                row["query"],
                label,
                question=row["question"],
                golden_answers=row["golden_answers"],
                n_docs=top_k,
                words_per_doc=words_per_doc,
                prompt_format="finetuned",
                prefill=False,
            )
            completion = [{"role": "assistant", "content": simulator_target(documents, words_per_doc)}]
            out.append({"prompt": prompt, "completion": completion, "label": label})
    return hf_datasets.Dataset.from_list(out)


def _check_sft_settings(load_in_4bit: bool, max_steps: int, learning_rate: float, lora_r: int) -> None:
    import torch

    if load_in_4bit and not torch.cuda.is_available():
        raise ValueError(
            "QLoRA (load_in_4bit=True) needs a CUDA GPU for bitsandbytes' 4-bit kernels; on CPU train a plain LoRA "
            "(load_in_4bit=False)."
        )
    if max_steps < 1 or learning_rate <= 0 or lora_r < 1:
        raise ValueError(
            f"Need max_steps >= 1, learning_rate > 0, lora_r >= 1; got {max_steps}, {learning_rate}, {lora_r}."
        )


def train_simulator(
    model: Any,
    dataset: Any,
    *,
    output_dir: str,
    max_steps: int = 100,
    learning_rate: float = 2e-4,
    per_device_train_batch_size: int = 4,
    lora_r: int = 16,
    lora_alpha: int = 32,
    load_in_4bit: bool = False,
    merge: bool = False,
    overwrite: bool = False,
    report_to: str | list[str] = "none",
    seed: int = 0,
    **sft_kwargs: Any,
) -> Path:
    """Fine-tune a simulator with TRL's ``SFTTrainer`` and a LoRA adapter (QLoRA with ``load_in_4bit``).

    The loss covers the completion (the documents) only. The adapter and tokenizer are saved to ``output_dir``;
    with ``merge=True`` the merged full model goes to ``output_dir/merged``, ready for
    ``SimulatedSearchEngine(TransformersGenerator(...), prompt_format="finetuned")``, vLLM or ``transformers serve``.

    Args:
        model: a folder or hub id (``"default"``: the embedded model).
        dataset: rows from :func:`make_simulator_sft_dataset`.
        output_dir: where the adapter (and ``merged/``) go; a folder holding another run is refused unless
            ``overwrite``.
        max_steps, learning_rate, per_device_train_batch_size: SFT settings (LoRA's usual 2e-4).
        lora_r, lora_alpha: LoRA rank and scaling (all linear layers).
        load_in_4bit: QLoRA (bitsandbytes NF4); needs a CUDA GPU.
        merge: also write the merged model.
        overwrite: allow writing into a folder that already holds a run.
        report_to: trainer loggers.
        seed: training seed.
        **sft_kwargs: further ``SFTConfig`` fields.

    Returns:
        The folder to load the simulator from (``merged/`` with ``merge=True``, else the adapter folder). The
        training log is saved as ``sft_log.json``.

    Raises:
        ValueError: QLoRA without a GPU, an empty dataset, a bad setting, or an output folder holding another run;
            all raised before any model loads.

    Example:
        >>> folder = train_simulator("default", sft, output_dir="simulator", merge=True)  # doctest: +SKIP
        >>> folder.name  # doctest: +SKIP
        'merged'
        >>> train_simulator("default", None, output_dir="simulator", max_steps=0)  # checked before any model loads
        Traceback (most recent call last):
        ...
        ValueError: Need max_steps >= 1, learning_rate > 0, lora_r >= 1; got 0, 0.0002, 16.
    """
    import torch

    _check_sft_settings(load_in_4bit, max_steps, learning_rate, lora_r)
    if len(dataset) == 0 or not {"prompt", "completion"} <= set(dataset.column_names):
        raise ValueError(
            "The SFT dataset must be non-empty with 'prompt' and 'completion' (make_simulator_sft_dataset)."
        )
    out = Path(output_dir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"{out} already holds files (another run?): choose a new --output_dir, or pass overwrite=True "
            "(--overwrite) to replace them."
        )
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from zerosearch_trl.models import load_model

    kwargs: dict[str, Any] = {}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        kwargs["device_map"] = "auto"
    loaded, tokenizer = load_model(model, **kwargs)
    on_gpu = torch.cuda.is_available()
    settings: dict[str, Any] = {
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "per_device_train_batch_size": per_device_train_batch_size,
        "logging_steps": max(1, max_steps // 10),
        "save_strategy": "no",
        "completion_only_loss": True,
        "report_to": report_to,
        "seed": seed,
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        **sft_kwargs,
    }
    trainer = SFTTrainer(
        model=loaded,
        args=SFTConfig(output_dir=str(out), **settings),
        train_dataset=dataset.remove_columns([c for c in dataset.column_names if c not in ("prompt", "completion")]),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    trainer.train()
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "sft_log.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")
    if not merge:
        return out
    if load_in_4bit:  # merging into 4-bit weights loses precision: merge into a full-precision reload instead
        from peft import PeftModel

        base, _ = load_model(model, dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(base, str(out)).merge_and_unload()
    else:
        merged = trainer.model.merge_and_unload()
    merged.save_pretrained(out / "merged")
    tokenizer.save_pretrained(out / "merged")
    return out / "merged"


@dataclass
class CollectArguments:
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
    prompt_style: str = field(default="one_shot", metadata={"help": "Policy instruction: one_shot or zero_shot."})
    batch_size: int = field(default=16, metadata={"help": "Questions played together."})


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
    labelling: str = field(default="outcome", metadata={"help": "'outcome' (paper) or 'contains_answer'."})
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


def run_collect_cli(argv: Sequence[str]) -> int:
    """``zerosearch-trl collect-simulator-data [--datasets ...] [--engine bm25 --corpus ...] [flags]``."""
    from zerosearch_trl.cli import command_parser
    from zerosearch_trl.engines.factory import EngineSettings

    parser = command_parser("collect-simulator-data", [CollectArguments, EngineSettings])
    parser.set_defaults(engine="bm25")
    args, settings = parser.parse_args_and_config(list(argv))
    pairs = _collect(args, settings)
    print(f"{len(pairs)} pairs ({sum(r == 'useful' for r in pairs['label'])} useful) in {args.output_dir}")
    return 0


def run_sft_cli(argv: Sequence[str]) -> int:
    """``zerosearch-trl sft-simulator [--pairs pairs.jsonl] [--model M] [flags]``."""
    import datasets as hf_datasets

    from zerosearch_trl.cli import command_parser
    from zerosearch_trl.engines.factory import EngineSettings

    (args,) = command_parser("sft-simulator", [SimulatorSFTArguments]).parse_args_and_config(list(argv))
    _check_sft_settings(args.load_in_4bit, args.max_steps, args.learning_rate, args.lora_r)
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
    sft = make_simulator_sft_dataset(
        pairs,
        labelling=args.labelling,
        top_k=args.top_k,
        words_per_doc=args.words_per_doc,
    )
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


def _collect(args: CollectArguments, settings: Any) -> Any:
    from zerosearch_trl.engines.factory import make_engine

    engine = make_engine(settings)
    if args.datasets:
        sources: Any = [s.strip() for s in args.datasets.split(",") if s.strip()]
    else:
        from zerosearch_trl.demo import make_demo_task

        # The demo world that the default engine's corpus describes (engine_seed).
        sources = {"demo": make_demo_task(seed=settings.engine_seed).dataset}
    pairs = collect_simulator_data(
        args.model,
        sources,
        engine,
        correct=args.correct,
        temperature=args.temperature,
        limit=args.limit,
        prompt_style=args.prompt_style,
        batch_size=args.batch_size,
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs.save_to_disk(str(out / "pairs"))
    pairs.to_json(str(out / "pairs.jsonl"), lines=True)
    return pairs
