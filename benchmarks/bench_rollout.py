"""Rollout throughput on the embedded model: the episode scheduler, the synchronous rollout, one batched generate,
TRL's tool loop.

    python benchmarks/bench_rollout.py [--grid 8x2,16x2,64x2,8x4,16x4,64x4] [--turn-tokens 64] [--obs-tokens 128]
                                       [--simulator] [--threads N] [--fresh]

The same demo questions, model and sampling (temperature 1), side by side, for each grid point (episodes x search
turns; each question is played twice, as GRPO's ``num_generations=2`` does):

(a)  ``make_search_rollout(engine)`` called as GRPOTrainer calls it, ``rollout(prompts, trainer)``: the episode
     scheduler over the continuous-batching generator (the default for HF generation in one process);
(a0) the same with ``continuous_batching=False``: the synchronous rollout (every live episode's turn in one batch);
(b)  one batched ``model.generate`` of the same number of model tokens: every row generates exactly the mean number
     of model tokens per row of (a) (``min_new_tokens`` = ``max_new_tokens``), the floor for generating that many;
(c)  (at 16 x 2 only) TRL's own tool loop, ``GRPOTrainer(environment_factory=SimulatedSearchEnv(engine))``, timed
     around ``trainer._generate``. The embedded model does not write tool calls by itself, so each row's tool calls
     are forced to the queries that (a) searched for the same question: a logits processor picks the tokens, the
     model still runs one forward pass per token, and both runs do the same searches.

The engine is a simulated engine whose generator returns fixed documents at once; a wrapper times it, and its
seconds are excluded from the ratios. With ``--simulator``, (a) and (a0) are also run (16 x 2) against the embedded
model as a real simulator (documents generated, taking real time): total wall time, engine calls, requests per call.
Model tokens exclude observations / tool results (the masked tokens). Each grid point is written to the JSON as it
finishes, and a rerun skips the points already there (``--fresh`` starts over).
Targets: (a) <= 1.25x (b) in wall time excluding engine time, batch utilisation >= 0.85; (a) tokens/s >= 1.5x (c).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from common import RESULTS, write_result
from transformers import LogitsProcessor, LogitsProcessorList

from zerosearch_trl import (
    THINK_PREFILL,
    ContinuousTransformersGenerator,
    Generation,
    SearchRequest,
    SimulatedSearchEngine,
    SimulatedSearchEnv,
    f1_reward,
    load_default_model,
    make_demo_task,
    make_search_rollout,
    render_policy_prompt,
)
from zerosearch_trl.rollout import policy
from zerosearch_trl.rollout.episode import episode_budget

# Short documents (74 tokens for five) keep a search turn and the turn after it within a CPU-sized budget.
FIXED_DOCUMENTS = "\n".join(f"Doc {i} (Title: Stub) Fixed result {i}." for i in range(1, 6))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func and environment_factory are experimental

TOOL_INSTRUCTION = (
    "Answer the question. Think inside <think> </think>. To search, call the search tool; its results come back "
    "as a tool response. Give the final answer inside <answer> </answer>.\nQuestion: {question}\n"
)


class FixedDocuments:
    """A simulator backend that answers every prompt with the same five documents, instantly."""

    name = "fixed"

    def generate(self, prompts: Sequence[Any], params: Any) -> list[Generation]:
        return [Generation(text=FIXED_DOCUMENTS) for _ in prompts]


class TimedEngine:
    """Times another engine's ``search`` calls."""

    def __init__(self, engine: SimulatedSearchEngine) -> None:
        self.engine, self.name, self.top_k = engine, engine.name, engine.top_k
        self.seconds, self.requests, self.calls = 0.0, 0, 0

    def search(self, requests: Sequence[SearchRequest]) -> list:
        self.calls += 1
        start = time.perf_counter()
        try:
            return self.engine.search(requests)
        finally:
            self.seconds += time.perf_counter() - start
            self.requests += len(requests)


class GenerateMeter:
    """Wraps ``model.generate``: counts calls, decode steps and seconds; ``hook`` may add generate kwargs."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.generate = model.generate
        self.hook: Callable[[torch.Tensor, torch.Tensor], dict] | None = None
        self.reset()
        model.generate = self  # TRL and the rollout call model.generate on this very object (single CPU process)

    def reset(self) -> None:
        self.calls, self.steps, self.row_steps, self.seconds = 0, 0, 0, 0.0

    def __call__(self, *args: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        if self.hook is not None:
            kwargs.update(self.hook(input_ids, attention_mask))
        start = time.perf_counter()
        output = self.generate(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.steps += output.shape[1] - input_ids.shape[1]
        self.row_steps += output.shape[0] * (output.shape[1] - input_ids.shape[1])
        return output

    def figures(self) -> dict:
        return {
            "generate_calls": self.calls,
            "decode_steps": self.steps,
            "row_steps": self.row_steps,  # rows x steps: finished rows keep their slot until the batch ends
            "generate_seconds": round(self.seconds, 2),
        }


class ForceTokens(LogitsProcessor):
    """Makes each row emit its scripted tokens first (``None``: free); the model still computes every step."""

    def __init__(self, forced: list[list[int] | None], prompt_width: int) -> None:
        self.forced, self.prompt_width = forced, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        for row, tokens in enumerate(self.forced):
            if tokens is not None and step < len(tokens):
                scores[row] = -math.inf
                scores[row, tokens[step]] = 0.0
        return scores


def forced_tool_calls(tokenizer: Any, queries: dict[str, list[str]]) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    """A GenerateMeter hook: a row whose question searched k times in (a) calls the tool with those k queries."""

    def hook(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        forced = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            text = tokenizer.decode([t for t, m in zip(ids, mask) if m])
            question = next(q for q in queries if q in text)
            turn = text.count("<tool_response>")
            if turn < len(queries[question]):
                call = json.dumps({"name": "search", "arguments": {"query": queries[question][turn]}})
                tokens = tokenizer(f"<tool_call>\n{call}\n</tool_call>", add_special_tokens=False)["input_ids"]
                forced.append(tokens + [tokenizer.eos_token_id])
            else:
                forced.append(None)
        return {"logits_processor": LogitsProcessorList([ForceTokens(forced, input_ids.shape[1])])}

    return hook


def figures(wall: float, tokens_per_row: list[int], meter: GenerateMeter, engine: TimedEngine | None = None) -> dict:
    tokens = sum(tokens_per_row)
    engine_seconds = engine.seconds if engine is not None else 0.0
    model_seconds = wall - engine_seconds
    return {
        "wall_seconds": round(wall, 2),
        "engine_seconds": round(engine_seconds, 4),
        "searches": engine.requests if engine is not None else 0,
        "wall_seconds_excluding_engine": round(model_seconds, 2),
        "model_tokens": tokens,
        "model_tokens_per_row_mean": round(tokens / len(tokens_per_row), 1),
        "model_tokens_per_row_max": max(tokens_per_row),
        "tokens_per_s": round(tokens / model_seconds, 1),
        **meter.figures(),
        "batch_utilisation": round(tokens / meter.row_steps, 3),
    }


def make_engine(simulator: Any = None) -> TimedEngine:
    """Fixed documents at once, or documents that ``simulator`` (a text generator) writes."""
    if simulator is None:
        return TimedEngine(SimulatedSearchEngine(FixedDocuments(), prefill=False, seed=0))
    return TimedEngine(SimulatedSearchEngine(simulator, seed=0, max_new_tokens=96))


def grpo_config(args: argparse.Namespace, episodes: int, turns: int, **extra: Any) -> Any:
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=episodes,
        num_generations=2,
        max_completion_length=episode_budget(turns, args.turn_tokens, args.obs_tokens),
        temperature=1.0,
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        **extra,
    )


class GeneratorSpy:
    """Stands in for the rollout's ContinuousTransformersGenerator class and keeps the instance it makes."""

    def __init__(self) -> None:
        self.made: list[ContinuousTransformersGenerator] = []

    def __call__(self, model: Any, tokenizer: Any, **kwargs: Any) -> ContinuousTransformersGenerator:
        self.made.append(ContinuousTransformersGenerator(model, tokenizer, **kwargs))
        return self.made[-1]


def run_rollout(
    model: Any, tokenizer: Any, prompts: list, dataset: Any, args: argparse.Namespace, turns: int, meter: GenerateMeter,
    *, continuous: bool, engine: TimedEngine,
) -> tuple[dict, dict]:  # fmt: skip
    """(a) with ``continuous``, (a0) without: one rollout call as GRPOTrainer makes it."""
    from trl import GRPOTrainer

    rollout = make_search_rollout(
        engine, max_turns=turns, max_turn_tokens=args.turn_tokens, max_observation_tokens=args.obs_tokens,
        continuous_batching=continuous,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[f1_reward],
        args=grpo_config(args, len(prompts), turns),
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout_func=rollout,
    )
    spy, real = GeneratorSpy(), policy.ContinuousTransformersGenerator
    policy.ContinuousTransformersGenerator = spy
    meter.reset()
    torch.manual_seed(0)
    try:
        start = time.perf_counter()
        out = rollout(prompts, trainer)
        wall = time.perf_counter() - start
    finally:
        policy.ContinuousTransformersGenerator = real
    tokens = [sum(mask) for mask in out["env_mask"]]
    if continuous:  # the generator's own counts: generate() is not called
        stats = spy.made[0].stats
        meter.calls, meter.steps, meter.row_steps = 0, stats["decode_steps"], stats["row_steps"]
        meter.seconds = wall
    result = figures(wall, tokens, meter, engine)
    if continuous:
        stats = spy.made[0].stats
        result["prefill_tokens"] = stats["prefill_tokens"]
        result["prefill_tokens_reused_from_kept_cache"] = stats["reused_tokens"]
        result["prefill_seconds"] = round(stats["prefill_seconds"], 2)
        result["decode_seconds"] = round(stats["decode_seconds"], 2)
        result["critical_path_tokens"] = max(tokens)  # the longest episode's model tokens: decode steps it needs
    result["invalid_actions"] = sum(out["invalid_actions"])
    result["turns_per_episode"] = round(sum(map(len, out["policy_turns"])) / len(prompts), 2)
    result["engine_calls"] = engine.calls
    result["requests_per_engine_call"] = round(engine.requests / max(engine.calls, 1), 2)
    result["prompt_tokens_mean"] = round(sum(len(p) for p in out["prompt_ids"]) / len(out["prompt_ids"]), 1)
    return result, out


def run_single_generate(model: Any, tokenizer: Any, chats: list, new_tokens: int, meter: GenerateMeter) -> dict:
    prompts = [
        tokenizer(render_policy_prompt(tokenizer, p, THINK_PREFILL), add_special_tokens=False)["input_ids"]
        for p in chats
    ]
    width, pad = max(len(p) for p in prompts), tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    meter.reset()
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            min_new_tokens=new_tokens,  # no early EOS: every row really generates new_tokens tokens
            max_new_tokens=new_tokens,
            pad_token_id=pad,
        )
    wall = time.perf_counter() - start
    tokens = [output.shape[1] - width] * len(prompts)
    result = figures(wall, tokens, meter)
    start = time.perf_counter()  # the prefill alone (and one token), to split the wall time as (a) does
    with torch.no_grad():
        model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=1, pad_token_id=pad)
    result["prefill_seconds"] = round(time.perf_counter() - start, 2)
    result["decode_seconds"] = round(wall - result["prefill_seconds"], 2)
    return result


def run_tool_loop(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    queries: dict[str, list[str]],
    args: argparse.Namespace,
    meter: GenerateMeter,
    turns: int,
) -> dict:
    from trl import GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    # SmolLM2's template renders no tools; TRL's packaged Qwen2.5 template uses the same <|im_start|> markup.
    tool_tokenizer = copy.deepcopy(tokenizer)
    tool_tokenizer.chat_template = qwen2_5_chat_template
    rows = dataset.map(
        lambda r: {"prompt": [{"role": "user", "content": TOOL_INSTRUCTION.format(question=r["question"])}]}
    )
    engine = make_engine()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[f1_reward],
        args=grpo_config(args, len(rows), turns, max_tool_calling_iterations=turns),
        train_dataset=rows,
        processing_class=tool_tokenizer,
        environment_factory=SimulatedSearchEnv(engine),
    )
    generate, timing = trainer._generate, {}

    def timed_generate(prompts: list) -> tuple:
        start = time.perf_counter()
        timing["output"] = generate(prompts)
        timing["seconds"] = time.perf_counter() - start
        return timing["output"]

    trainer._generate = timed_generate
    meter.reset()
    meter.hook = forced_tool_calls(tool_tokenizer, queries)
    torch.manual_seed(0)
    start = time.perf_counter()
    trainer._generate_and_score_completions(list(rows))
    total = time.perf_counter() - start
    meter.hook = None
    prompt_ids, _, tool_mask, *_ = timing["output"]
    result = figures(timing["seconds"], [sum(mask) for mask in tool_mask], meter, engine)
    result["generate_and_score_seconds"] = round(total, 2)
    # TRL drops a tool result that would overflow max_completion_length (after running the tool).
    result["rows_with_tool_results"] = sum(0 in mask for mask in tool_mask)
    result["prompt_tokens_mean"] = round(sum(len(p) for p in prompt_ids) / len(prompt_ids), 1)
    return result


def grid_point(model: Any, tokenizer: Any, task: Any, episodes: int, turns: int, args: argparse.Namespace,
               meter: GenerateMeter) -> dict:  # fmt: skip
    """(a0), (a) and (b) at one grid point (and (c) at 16 x 2)."""
    dataset = task.select(range(episodes // 2))
    prompts = [p for p in dataset["prompt"] for _ in range(2)]  # num_generations = 2, as GRPO passes them
    a0, _ = run_rollout(model, tokenizer, prompts, dataset, args, turns, meter, continuous=False, engine=make_engine())
    a, out = run_rollout(model, tokenizer, prompts, dataset, args, turns, meter, continuous=True, engine=make_engine())
    b = run_single_generate(model, tokenizer, prompts, math.ceil(a["model_tokens"] / len(prompts)), meter)
    point = {
        "episodes": episodes, "search_turns": turns,
        "max_completion_length": episode_budget(turns, args.turn_tokens, args.obs_tokens),
        "a_scheduler": a, "a0_synchronous": a0, "b_single_generate": b,
        "ratio_a_over_b_wall_excluding_engine": round(a["wall_seconds_excluding_engine"] / b["wall_seconds_excluding_engine"], 2),
        "ratio_a0_over_b_wall_excluding_engine": round(a0["wall_seconds_excluding_engine"] / b["wall_seconds_excluding_engine"], 2),
        "tokens_per_s_a_over_a0": round(a["tokens_per_s"] / a0["tokens_per_s"], 2),
    }  # fmt: skip
    if (episodes, turns) == (16, 2):
        queries = dict(zip(dataset["question"], out["search_queries"][::2]))
        c = run_tool_loop(model, tokenizer, dataset, queries, args, meter, turns)
        point["c_trl_tool_loop"] = c
        point["ratio_a_over_c_tokens_per_s"] = round(a["tokens_per_s"] / c["tokens_per_s"], 2)
    return point


def simulator_point(model: Any, tokenizer: Any, task: Any, args: argparse.Namespace, meter: GenerateMeter) -> dict:
    """(a0) and (a) at 16 x 2 against the embedded model as a simulator that writes its documents."""
    dataset = task.select(range(8))
    prompts = [p for p in dataset["prompt"] for _ in range(2)]
    from zerosearch_trl import TransformersGenerator

    a0, _ = run_rollout(model, tokenizer, prompts, dataset, args, 2, meter, continuous=False,
                        engine=make_engine(TransformersGenerator(model, tokenizer)))  # fmt: skip
    a, _ = run_rollout(model, tokenizer, prompts, dataset, args, 2, meter, continuous=True,
                       engine=make_engine(ContinuousTransformersGenerator(model, tokenizer)))  # fmt: skip
    return {
        "episodes": 16, "search_turns": 2,
        "simulator": "the embedded model, documents up to 96 tokens; (a0) on TransformersGenerator, (a) on "
        "ContinuousTransformersGenerator",
        "a_scheduler": a, "a0_synchronous": a0,
        "total_wall_a_over_a0": round(a["wall_seconds"] / a0["wall_seconds"], 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--grid", default="8x2,16x2,64x2,8x4,16x4,64x4", help="episodes x search turns, comma-separated"
    )
    parser.add_argument("--turn-tokens", type=int, default=64, help="max_turn_tokens")
    parser.add_argument("--obs-tokens", type=int, default=128, help="max_observation_tokens")
    parser.add_argument("--simulator", action="store_true", help="also run against the embedded model as simulator")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--fresh", action="store_true", help="ignore the points already in the JSON")
    parser.add_argument("--redo", default="", help="grid points to measure again, comma-separated")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = RESULTS / "rollout_throughput.json"
    previous = json.loads(path.read_text()) if path.exists() and not args.fresh else {}
    settings = {"turn_tokens": args.turn_tokens, "obs_tokens": args.obs_tokens, "temperature": 1.0}
    points = previous.get("grid", {}) if previous.get("settings") == settings else {}
    for name in filter(None, args.redo.split(",")):
        points.pop(name, None)
    model, tokenizer = load_default_model()
    model.eval()
    meter = GenerateMeter(model)
    # (c) recognises a row by its question, so the questions must be distinct (the demo task may repeat one).
    task = make_demo_task(256, seed=0, prompt_style="one_shot").dataset
    first_rows = {question: i for i, question in reversed(list(enumerate(task["question"])))}
    task = task.select(sorted(first_rows.values()))
    load = {"start": os.getloadavg()}

    def save() -> None:
        load["end"] = os.getloadavg()
        write_result("rollout_throughput", {
            "model": "SmolLM2-135M-Instruct (embedded)", "load_average_1_5_15_min": load, "settings": settings,
            "grid": points, "notes": NOTES,
        })  # fmt: skip

    for name in args.grid.split(","):
        if name in points:
            continue
        episodes, turns = map(int, name.split("x"))
        points[name] = grid_point(model, tokenizer, task, episodes, turns, args, meter)
        save()
    if args.simulator and "simulator_16x2" not in points:
        points["simulator_16x2"] = simulator_point(model, tokenizer, task, args, meter)
        save()
    save()


NOTES = [
    "(b) generates the mean model tokens per row of (a) in every row, in one call: same total tokens.",
    "(a) counts decode steps and row-steps in its generator (the first token of a turn comes from its prefill, "
    "as in generate); batch_utilisation = model tokens / row_steps.",
    "(a) keeps each episode's keys and values across its turns: a turn prefills only the observation (and the "
    "tokens of the last turn not yet fed); prefill_tokens and prefill_tokens_reused_from_kept_cache say how many.",
    "(a0) generates each turn as one static batch that runs until its longest row stops and re-encodes the whole "
    "context at every turn.",
    "(c) renders prompts with TRL's packaged Qwen2.5 chat template on the SmolLM2 tokenizer (SmolLM2's own template "
    "renders no tools), so its prompts hold the tool schema instead of (a)'s worked example.",
    "(c)'s tool calls are forced token by token to (a)'s queries (the 135M model writes no valid tool calls); "
    "forced tokens still cost one forward pass each and count as model tokens. TRL's tool loop calls the "
    "environment once per row and tool call.",
    "Model tokens exclude observations and tool results (env_mask / tool_mask = 0).",
    "Sampling at temperature 1: (a) and (a0) do not generate the same tokens; compare tokens per second.",
]


if __name__ == "__main__":
    main()
