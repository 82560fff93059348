"""Warm start: a short SFT on well-formed search trajectories before GRPO.

A small policy rarely writes a well-formed ``<search>`` on its own (the embedded 135M model: about 9 first turns
in 32 with the one-shot prompt), and GRPO cannot reward what it never samples. :func:`make_warmstart_dataset`
writes protocol-perfect trajectories over the demo task's corpus, :func:`warm_start` fine-tunes on them with TRL's
``SFTTrainer``, and :func:`~zerosearch_trl.training.probe.well_formed_search_share` measures the share of first
turns that search.

Each training example is tokenized exactly as the search rollout tokenizes an episode at RL time: the prompt
rendered by :func:`~zerosearch_trl.prompts.render_policy_prompt` with the ``<think>`` prefill, then the policy's
turns and the environment's ``<information>`` observations tokenized one segment at a time. The loss covers only
the policy's turns and the final EOS; the prompt, the prefill and the observations (the rollout's ``env_mask = 0``
tokens) are labelled ``-100``.

Example:
    >>> from zerosearch_trl.training.warmstart import make_warmstart_dataset
    >>> rows = make_warmstart_dataset(n_examples=4, seed=0)
    >>> rows.column_names
    ['prompt', 'completion', 'question', 'golden_answers', 'id']
    >>> rows[0]["completion"][0]["content"].startswith("<think>")
    True
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

import datasets

from zerosearch_trl.answers import normalize_answer
from zerosearch_trl.demo import DemoTask, make_demo_task
from zerosearch_trl.engines.base import Document, contains_answer
from zerosearch_trl.prompts import THINK_PREFILL, PromptStyle, build_policy_prompt, render_policy_prompt
from zerosearch_trl.protocol import render_observation

# Reasoning lines, varied a little so that the policy learns the protocol rather than one sentence.
_SEARCH_THOUGHTS = (
    "I need to search for {entity}.",
    "I do not know this yet. Let me search for {entity}.",
    "I should look up {entity}.",
    "The question is about {entity}. I will search for it.",
)
_BRIDGE_THOUGHTS = (
    "Doc {doc} mentions {bridge}. Now I need to search for {bridge}.",
    "According to Doc {doc}, the next step is {bridge}. Let me search for it.",
    "Doc {doc} leads to {bridge}. I should look up {bridge}.",
)
_ANSWER_THOUGHTS = (
    "Doc {doc} says the answer is {answer}.",
    "According to Doc {doc}, it is {answer}.",
    "The answer is {answer}, from Doc {doc}.",
    "Doc {doc} gives the answer: {answer}.",
)

# Environment text inside a completion: the rollout appends everything after ``</search>`` up to the policy's
# next turn (``render_observation`` writes "\n\n<information>...</information>\n\n").
_OBSERVATION = re.compile(r"\s*<information>.*?</information>\s*", re.DOTALL)


def _title_pattern(titles: Iterable[str]) -> re.Pattern[str]:
    # Longest first, so that a title inside a longer one ("Kaiton" in "Kaiton Bree") loses to it.
    ordered = sorted(set(titles), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(t) for t in ordered) + r")\b")


def _named_entities(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [match.group(0) for match in pattern.finditer(text)]


def _search_path(
    question: str, golds: Sequence[str], passages: dict[str, str], pattern: re.Pattern[str]
) -> list[str] | None:
    """The corpus titles to search, in order, so that the last passage states a gold answer; ``None`` if none.

    The first search is the entity the question names; when its passage lacks the answer (a two-hop question),
    the second is the first title that passage mentions whose own passage holds the answer (the bridge). The
    shortest path wins: in a small world a two-hop answer can coincide with a fact of the first passage (a person
    born in the town where their organisation sits), and that trajectory answers after one search, still correctly.
    """
    named = _named_entities(question, pattern)
    if not named:
        return None
    entity = named[0]
    if contains_answer(Document(entity, passages[entity]), golds):
        return [entity]
    for bridge in _named_entities(passages[entity], pattern):
        if bridge != entity and contains_answer(Document(bridge, passages[bridge]), golds):
            return [entity, bridge]
    return None


def _observation(
    gold: str, passages: dict[str, str], golds: Sequence[str], n_docs: int, rng: random.Random
) -> tuple[str, int]:
    """The rendered ``<information>`` block: the gold passage at a random rank among distractors; its 1-based rank.

    Distractors never state a gold answer, so that the passage the answer comes from is unambiguous.
    """
    pool = [t for t in passages if t != gold and not contains_answer(Document(t, passages[t]), golds)]
    titles = rng.sample(pool, min(n_docs - 1, len(pool)))
    rank = rng.randint(0, len(titles))
    titles.insert(rank, gold)
    return render_observation([Document(t, passages[t]) for t in titles]), rank + 1


def _trajectory(
    path: list[str], answer: str, golds: Sequence[str], passages: dict[str, str], n_docs: int, rng: random.Random
) -> str:
    """The assistant turn's whole text, starting with the ``<think>`` prefill: searches, observations, answer."""
    text = (
        f"{THINK_PREFILL} {rng.choice(_SEARCH_THOUGHTS).format(entity=path[0])} </think>\n<search> {path[0]} </search>"
    )
    for hop, title in enumerate(path):
        observation, rank = _observation(title, passages, golds, n_docs, rng)
        text += observation
        if hop + 1 < len(path):
            bridge = path[hop + 1]
            thought = rng.choice(_BRIDGE_THOUGHTS).format(doc=rank, bridge=bridge)
            text += f"<think> {thought} </think>\n<search> {bridge} </search>"
        else:
            thought = rng.choice(_ANSWER_THOUGHTS).format(doc=rank, answer=answer)
            text += f"<think> {thought} </think>\n<answer> {answer} </answer>"
    return text


def make_warmstart_dataset(
    task: DemoTask | None = None,
    *,
    n_examples: int = 256,
    max_turns: int = 2,
    prompt_style: PromptStyle = "one_shot",
    n_docs: int = 3,
    seed: int = 0,
    exclude_questions: Iterable[str] = (),
) -> datasets.Dataset:
    """Well-formed search trajectories over a demo task, in TRL's conversational prompt/completion format.

    Each row answers one demo question the way the protocol wants: a short ``<think>``, a ``<search>`` for the
    entity the question names, an ``<information>`` block with that entity's passage among ``n_docs - 1``
    distractors, and, for a two-hop question, a second search for the bridge entity that passage mentions;
    then ``<think>`` and ``<answer>`` with the gold answer, which the last observation states.

    ``prompt`` is the policy prompt the rollout uses (:func:`~zerosearch_trl.prompts.build_policy_prompt`);
    ``completion`` is one assistant message whose content starts with the ``<think>`` prefill, so that the chat
    template renders ``prompt + completion`` as the exact text of an RL episode. :func:`tokenize_warmstart_dataset`
    then moves the prefill back into the context, as the rollout does, so that the model is trained on exactly
    what it is asked to continue at RL time.

    Held-out questions: pass the questions you will train GRPO or evaluate on as ``exclude_questions``. They are
    never used, nor is any question whose searches name an entity one of them names, so a later measurement on
    them does not reward memorised trajectories. Towns and organisations shared with a held-out two-hop question's
    bridge can still appear (they are shared by many people in the demo world).

    Args:
        task: the demo task to draw questions and passages from; default ``make_demo_task(n_examples, seed)``.
        n_examples: rows to write; when fewer usable questions remain, questions repeat with fresh distractors,
            wording and document order.
        max_turns: searches allowed per episode, as in the rollout; two-hop questions are skipped below 2.
        prompt_style: policy instruction style, the one the RL job will use.
        n_docs: documents per observation (the gold one included).
        seed: seeds the question order, distractors, ranks and wording.
        exclude_questions: held-out questions (compared after answer normalisation).

    Returns:
        A dataset with ``prompt``, ``completion``, ``question``, ``golden_answers`` and ``id`` (the question's).

    Raises:
        ValueError: on a bad argument, or when no question is usable after the exclusions.

    Example:
        >>> task = make_demo_task(64, seed=1)
        >>> held_out = task.dataset.select(range(16))["question"]
        >>> rows = make_warmstart_dataset(task, n_examples=8, exclude_questions=held_out)
        >>> any(q in held_out for q in rows["question"])
        False
    """
    for name, value, low in (("n_examples", n_examples, 1), ("max_turns", max_turns, 1), ("n_docs", n_docs, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    build_policy_prompt("", prompt_style)  # raises on an unknown style, naming it
    if isinstance(exclude_questions, str):
        raise ValueError("exclude_questions must be a collection of questions, not one string.")
    exclude_questions = list(exclude_questions)  # read twice below; a generator would be empty the second time
    if task is None:
        task = make_demo_task(n_examples, seed=seed, prompt_style=prompt_style)
    if not isinstance(task, DemoTask):
        raise ValueError(f"task must be a DemoTask (from make_demo_task), got {type(task).__name__}.")

    passages = dict(zip(task.corpus["title"], task.corpus["text"]))
    pattern = _title_pattern(passages)
    held_out = {normalize_answer(q) for q in exclude_questions}
    held_out_entities = {e for q in exclude_questions for e in _named_entities(q, pattern)}
    usable = []
    for row in task.dataset:
        if normalize_answer(row["question"]) in held_out:
            continue
        path = _search_path(row["question"], row["golden_answers"], passages, pattern)
        if path is None or len(path) > max_turns or held_out_entities.intersection(path):
            continue
        usable.append((row, path))
    if not usable:
        raise ValueError(
            f"No question of the task is usable after excluding {len(held_out)} held-out questions "
            f"(max_turns={max_turns}); pass a larger task, e.g. make_demo_task(n_questions=512)."
        )

    rng = random.Random(seed)
    rng.shuffle(usable)
    rows = []
    for i in range(n_examples):
        row, path = usable[i % len(usable)]
        golds = row["golden_answers"]
        completion = _trajectory(path, golds[0], golds, passages, n_docs, rng)
        rows.append(
            {
                "prompt": build_policy_prompt(row["question"], prompt_style),
                "completion": [{"role": "assistant", "content": completion}],
                "question": row["question"],
                "golden_answers": list(golds),
                "id": row["id"],
            }
        )
    return datasets.Dataset.from_list(rows)


def tokenize_warmstart_dataset(
    dataset: datasets.Dataset, tokenizer: Any, *, prefill: str | None = THINK_PREFILL
) -> datasets.Dataset:
    """Tokenize prompt/completion rows as the rollout does, with ``labels`` only on the policy's own tokens.

    The context is ``render_policy_prompt(tokenizer, prompt, prefill)``, tokenized alone (the rollout's prompt
    ids); the completion, less the prefill it starts with, is cut at each ``<information>`` observation and each
    piece is tokenized alone, as the rollout appends generated ids and observation ids. Labels are ``-100`` on the
    context and the observations, and the token ids elsewhere; the tokenizer's EOS closes the sequence and is
    trained, so that the policy learns to stop after ``</answer>``. TRL's ``SFTTrainer`` takes these ``input_ids``
    and ``labels`` as they are. (Its own prompt/completion path would train on the observations: SmolLM2's chat
    template has no ``{% generation %}`` markers for ``assistant_only_loss`` to split turns by.)

    Args:
        dataset: rows with ``prompt`` (messages) and ``completion`` (one assistant message), e.g. from
            :func:`make_warmstart_dataset`.
        tokenizer: the policy's tokenizer.
        prefill: the rollout's prefill; ``None`` if the rollout runs without one.

    Example:
        >>> features = tokenize_warmstart_dataset(make_warmstart_dataset(n_examples=2), tokenizer)  # doctest: +SKIP
        >>> features.column_names  # doctest: +SKIP
        ['input_ids', 'labels']
    """
    missing = {"prompt", "completion"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"The warm-start dataset needs 'prompt' and 'completion' columns; missing {sorted(missing)}.")
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no EOS token; the policy must learn to end its answer turn with one.")

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def tokenize(row: dict[str, Any]) -> dict[str, list[int]]:
        text = row["completion"][-1]["content"]
        if prefill and not text.startswith(prefill):
            raise ValueError(f"A completion does not start with the prefill {prefill!r}: {text[:40]!r}...")
        text = text[len(prefill or "") :]
        input_ids = encode(render_policy_prompt(tokenizer, row["prompt"], prefill))
        labels = [-100] * len(input_ids)
        position = 0
        for match in _OBSERVATION.finditer(text):
            for piece, trained in ((text[position : match.start()], True), (match.group(0), False)):
                ids = encode(piece)
                input_ids += ids
                labels += ids if trained else [-100] * len(ids)
            position = match.end()
        ids = encode(text[position:]) + [tokenizer.eos_token_id]
        return {"input_ids": input_ids + ids, "labels": labels + ids}

    return dataset.map(tokenize, remove_columns=dataset.column_names)


def warm_start(
    model: Any,
    tokenizer: Any,
    dataset: datasets.Dataset | None = None,
    *,
    output_dir: str,
    max_steps: int = 8,
    learning_rate: float = 1e-4,
    per_device_train_batch_size: int = 2,
    gradient_accumulation_steps: int = 1,
    lora: bool = False,
    lora_r: int = 16,
    lora_alpha: int = 32,
    prefill: str | None = THINK_PREFILL,
    report_to: str | list[str] = "none",
    seed: int = 0,
    **sft_kwargs: Any,
) -> Any:
    """Fine-tune the policy briefly on well-formed search trajectories (TRL ``SFTTrainer``); return it.

    The defaults take about a minute and a half for the embedded 135M model on two CPU cores and raise its share
    of well-formed first-turn searches (see ``benchmarks/bench_warmstart.py``). Training runs on the GPU when there
    is one (bf16 where supported), otherwise on the CPU in float32. The loss covers only the policy's own tokens
    (see :func:`tokenize_warmstart_dataset`). No checkpoint is written; ``output_dir`` holds the trainer's files.

    Args:
        model: the policy (a transformers causal LM); trained in place.
        tokenizer: its tokenizer.
        dataset: prompt/completion rows; default: one pass of :func:`make_warmstart_dataset` rows (``seed``).
            Build it yourself with ``exclude_questions`` when GRPO or an evaluation will use demo-task questions.
        output_dir: the trainer's output folder.
        max_steps: optimisation steps.
        learning_rate: peak learning rate (linear decay, no warm-up).
        per_device_train_batch_size: sequences per step and device.
        gradient_accumulation_steps: batches per optimisation step.
        lora: train a LoRA adapter (``lora_r``, ``lora_alpha``, all linear layers) and merge it into the returned
            model, instead of all weights.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        prefill: the rollout's prefill (see :func:`tokenize_warmstart_dataset`).
        report_to: trainer loggers (``"none"``, ``"wandb"``, ...).
        seed: trainer seed, and the default dataset's.
        **sft_kwargs: further ``SFTConfig`` fields (``logging_steps``, ``gradient_checkpointing``...).

    Returns:
        The trained model (LoRA merged), in eval mode, ready for ``GRPOTrainer``.

    Raises:
        ValueError: on a bad argument, before any training.

    Example:
        >>> import zerosearch_trl as zs
        >>> model, tokenizer = zs.load_default_model()  # doctest: +SKIP
        >>> model = zs.warm_start(model, tokenizer, output_dir="runs/warm-start")  # doctest: +SKIP
        >>> zs.well_formed_search_share(model, tokenizer, ["Who founded the Tralen Guild?"])["shares"]  # doctest: +SKIP
    """
    for name, value in (
        ("max_steps", max_steps),
        ("per_device_train_batch_size", per_device_train_batch_size),
        ("gradient_accumulation_steps", gradient_accumulation_steps),
        ("lora_r", lora_r),
        ("lora_alpha", lora_alpha),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if not isinstance(learning_rate, (int, float)) or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}.")
    if not isinstance(lora, bool):
        raise ValueError(f"lora must be True or False, got {lora!r}.")
    if not output_dir or not isinstance(output_dir, str):
        raise ValueError(f"output_dir must be a non-empty path string, got {output_dir!r}.")
    if model is None or not callable(getattr(model, "forward", None)):
        raise ValueError(f"model must be a transformers causal LM, got {model!r}.")
    if dataset is None:
        dataset = make_warmstart_dataset(
            n_examples=max_steps * per_device_train_batch_size * gradient_accumulation_steps, seed=seed
        )
    if len(dataset) == 0:
        raise ValueError("The warm-start dataset is empty.")
    features = tokenize_warmstart_dataset(dataset, tokenizer, prefill=prefill)

    import torch
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    # transformers 5.x renamed gradient_checkpointing (a deprecated alias now); older 5.x releases know only the alias.
    names = {f.name for f in fields(SFTConfig)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    settings: dict[str, Any] = {
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "per_device_train_batch_size": per_device_train_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "logging_steps": max(1, max_steps // 4),
        "save_strategy": "no",
        "report_to": report_to,
        "seed": seed,
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        **sft_kwargs,
    }
    if not {"activation_checkpointing", "gradient_checkpointing"} & set(sft_kwargs):
        # TRL turns checkpointing on by default; a 135M model fits without it, and it costs a second forward pass.
        settings[checkpointing] = False
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir=output_dir, **settings),
        train_dataset=features,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    trained = trainer.model.merge_and_unload() if lora else trainer.model
    return trained.eval()
