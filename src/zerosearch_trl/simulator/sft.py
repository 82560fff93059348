"""Simulator SFT, the paper's first stage: turn an LLM into a search engine that writes useful or noisy documents.

1. :func:`~zerosearch_trl.simulator.collect.collect_simulator_data` runs a policy over QA questions against a REAL engine, with the training protocol
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

:func:`~zerosearch_trl.simulator.check.check_simulator` then tells whether the simulator is good enough to train on.

Example:
    >>> import zerosearch_trl as zs
    >>> pairs = zs.collect_simulator_data("default", ["nq.jsonl"], zs.BM25Engine.load("index/"))  # doctest: +SKIP
    >>> sft = zs.make_simulator_sft_dataset(pairs)  # doctest: +SKIP
    >>> zs.train_simulator("default", sft, output_dir="simulator", merge=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zerosearch_trl.prompts import SIMULATOR_OUTPUT_FORMAT, simulator_messages
from zerosearch_trl.simulator.collect import LABEL_COLUMNS, Labelling

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


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


def check_sft_settings(load_in_4bit: bool, max_steps: int, learning_rate: float, lora_r: int) -> None:
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

    check_sft_settings(load_in_4bit, max_steps, learning_rate, lora_r)
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
