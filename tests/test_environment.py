"""The search environment for TRL's ``environment_factory``: the tool, the shared engine, and a real GRPO step.

The simulator's LLM is a scripted text generator whose documents say which mode (useful/noisy) they were written
in. The trainer test drives TRL's own tool-calling loop: a tiny random Qwen2 model whose ``generate`` is scripted
to emit a Qwen2.5-style ``<tool_call>`` on its first turn and an answer after the tool result, over the real
SmolLM2 tokenizer given TRL's packaged Qwen2.5 chat template (SmolLM2's own template renders no tools).
"""

from __future__ import annotations

import copy
import json
import re

import datasets
import pytest
import torch

from helpers import ScriptedGenerator, cpu_config, make_tiny_model
from test_rollout import make_trainer, qa_dataset, scripted_generate
from zerosearch_trl.engines.base import SEARCH_FAILED_TEXT, SearchRequest
from zerosearch_trl.engines.simulated import SimulatedSearchEngine
from zerosearch_trl.environment import SimulatedSearchEnv
from zerosearch_trl.rewards import f1_reward
from zerosearch_trl.rollout import make_search_rollout

GOLD = {"Where is Alpha?": ["Paris"], "Where is Beta?": ["Rome"], "Where is Gamma?": ["Lima"]}


def simulator_script(prompts):
    """Five documents per prompt, naming the query and the mode the engine asked for."""
    texts = []
    for messages in prompts:
        content = messages[0]["content"]
        mode = "noisy" if "must be noisy" in content else "useful"
        query = re.search(r'query "(.*?)"', content).group(1)
        texts.append("\n".join(f"Doc {i} (Title: {query} {i}) {mode} text {i} about {query}." for i in range(1, 6)))
    return texts


class RecordingEngine(SimulatedSearchEngine):
    """A simulated engine over the scripted simulator that records each batch of requests."""

    def __init__(self, **kwargs):
        super().__init__(ScriptedGenerator(simulator_script), **kwargs)
        self.batches = []

    def search(self, requests, modes=None):
        self.batches.append(list(requests))
        return super().search(requests, modes)


class Broken:
    name, top_k = "broken", 5

    def search(self, requests):
        raise ConnectionError("index server down")


class Short:
    name, top_k = "short", 5

    def search(self, requests):
        return []


def test_factory_makes_fresh_environments_sharing_one_engine():
    engine = RecordingEngine()
    factory = SimulatedSearchEnv(engine)
    first, second = factory(), factory()
    assert first is not second and first.engine is second.engine is engine
    factory.noise_prob = 0.75  # as the curriculum does, on the object the user built
    assert engine.noise_prob == first.noise_prob == second.noise_prob == 0.75
    engine.noise_prob = 0.25
    assert second.noise_prob == 0.25
    with pytest.raises(ValueError, match="search engine"):
        SimulatedSearchEnv(None)
    with pytest.raises(AttributeError, match="no noise_prob"):
        SimulatedSearchEnv(Broken()).noise_prob = 0.5


def test_search_carries_the_rows_question_and_gold_and_counts():
    engine = RecordingEngine(noise_prob=1.0, leak_guard="off")
    env = SimulatedSearchEnv(engine)()
    assert (
        env.reset(prompt=[{"role": "user", "content": "..."}], question="Where is Alpha?", golden_answers=["Paris"])
        is None
    )
    text = env.search("  alpha place ")
    assert engine.batches == [[SearchRequest("alpha place", "Where is Alpha?", ("Paris",))]]
    assert text.splitlines()[0] == "Doc 1 (Title: alpha place 1) noisy text 1 about alpha place."
    assert len(text.splitlines()) == 5
    assert (env.num_searches, env.search_queries, env.noisy_searches, env.noisy_fraction) == (
        1,
        ["alpha place"],
        1,
        1.0,
    )

    engine.noise_prob = 0.0
    env.search("alpha again")
    assert env.noisy_fraction == 0.5
    assert env.search("   ") == "The query is empty: call search with the words to look for."
    assert len(engine.batches) == 2 and env.num_searches == 2  # an empty query never reaches the engine

    env.reset(question="Where is Beta?", answer="Rome")  # a dataset with an `answer` column
    assert (env.num_searches, env.noisy_searches, env.golden_answers) == (0, 0, ("Rome",))
    env.search("beta")
    assert engine.batches[-1] == [SearchRequest("beta", "Where is Beta?", ("Rome",))]


@pytest.mark.parametrize("engine", [Broken(), Short()], ids=["raises", "too-few-results"])
def test_engine_failure_returns_a_notice_and_is_counted(engine):
    env = SimulatedSearchEnv(engine)()
    env.reset(question="Where is Alpha?", golden_answers=["Paris"])
    assert env.search("alpha place") == f"Doc 1 {SEARCH_FAILED_TEXT}"
    assert (env.search_failures, env.num_searches) == (1, 1)
    env.reset(question="Where is Alpha?")
    assert env.search_failures == 0


@pytest.mark.parametrize("noise_prob", [0.0, 1.0])
def test_same_documents_as_the_tag_protocol_for_the_same_draw(tokenizer, noise_prob):
    """Every search useful, then every search noisy: both modes are compared. (The tag protocol keys each search's
    draw by its episode; an environment, which does not know its episode's place in the batch, draws in order.)"""
    questions = ["Where is Alpha?", "Where is Gamma?"]
    tag_engine = RecordingEngine(noise_prob=noise_prob, seed=7, leak_guard="off")
    policy = make_tiny_model(tokenizer)
    policy.generate = scripted_generate(tokenizer)
    dataset = qa_dataset(questions)
    rollout = make_search_rollout(tag_engine, max_turns=2)
    out = rollout(list(dataset["prompt"]), make_trainer(policy, tokenizer, dataset, rollout, 400))
    observations = [
        block
        for ids in out["completion_ids"]
        for block in re.findall(r"<information>(.*?)</information>", tokenizer.decode(ids), re.DOTALL)
    ]

    tool_engine = RecordingEngine(noise_prob=noise_prob, seed=7, leak_guard="off")
    factory = SimulatedSearchEnv(tool_engine)
    alpha, gamma = factory(), factory()
    alpha.reset(question="Where is Alpha?", golden_answers=GOLD["Where is Alpha?"])
    gamma.reset(question="Where is Gamma?", golden_answers=GOLD["Where is Gamma?"])
    results = [alpha.search("alpha place"), gamma.search("gamma one"), gamma.search("gamma two")]

    assert observations == results
    assert [" noisy text" in o for o in observations] == [noise_prob == 1.0] * 3
    tag_requests = [r for batch in tag_engine.batches for r in batch]
    tool_requests = [r for batch in tool_engine.batches for r in batch]
    assert sorted(tag_requests, key=str) == sorted(tool_requests, key=str)


# --- TRL's tool-calling loop -------------------------------------------------------------------------------------

TOOL_CALL = '<tool_call>\n{{"name": "search", "arguments": {{"query": "{query}"}}}}\n</tool_call>'


@pytest.fixture
def tool_tokenizer(tokenizer):
    """The SmolLM2 tokenizer with TRL's packaged Qwen2.5 template (same <|im_start|> markup, renders tools)."""
    from trl.chat_template_utils import qwen2_5_chat_template

    tool_tokenizer = copy.deepcopy(tokenizer)  # the session fixture stays untouched (TRL also adds a parser)
    tool_tokenizer.chat_template = qwen2_5_chat_template
    return tool_tokenizer


def tool_policy(tokenizer):
    """Scripted ``generate``: even rows call the tool then answer right; odd rows answer wrongly at once."""

    def generate(input_ids, attention_mask=None, generation_config=None, **kwargs):
        rows = []
        for row_index, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
            text = tokenizer.decode([t for t, m in zip(ids, mask) if m])
            question = next(q for q in GOLD if q in text)
            if "<tool_response>" in text:
                reply = f"Found it. <answer> {GOLD[question][0]} </answer>"
            elif row_index % 2 == 0:
                reply = TOOL_CALL.format(query=question.removeprefix("Where is ").rstrip("?").lower() + " place")
            else:
                reply = "<answer> London </answer>"
            new = tokenizer(reply + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            rows.append(ids + new[: generation_config.max_new_tokens])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])

    return generate


def tool_dataset(questions):
    return datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"Use the search tool, then answer in <answer> </answer>. {q}"}],
                "question": q,
                "golden_answers": GOLD[q],
            }
            for q in questions
        ]
    )


def tool_trainer(tmp_path, tool_tokenizer, engine, reward_funcs=(f1_reward,), **config):
    from trl import GRPOTrainer

    model = make_tiny_model(tool_tokenizer, "qwen2")
    model.generate = tool_policy(tool_tokenizer)
    args = cpu_config(
        tmp_path,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=256,
        max_tool_calling_iterations=2,
        learning_rate=1e-2,
        **config,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=list(reward_funcs),
        args=args,
        train_dataset=tool_dataset(["Where is Alpha?", "Where is Beta?"]),
        processing_class=tool_tokenizer,
        environment_factory=SimulatedSearchEnv(engine),
    )


@pytest.mark.slow
def test_trl_exposes_exactly_one_tool_search_with_a_string_query(tmp_path, tool_tokenizer):
    from transformers.utils import get_json_schema

    trainer = tool_trainer(tmp_path, tool_tokenizer, RecordingEngine())
    assert [tool.__name__ for tool in trainer.tools] == ["search"]
    schema = get_json_schema(trainer.tools[0])["function"]
    assert schema["parameters"]["properties"] == {
        "query": {"type": "string", "description": "What to search for, in a few words."}
    }
    assert schema["parameters"]["required"] == ["query"]
    rendered = tool_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tools=trainer.tools, tokenize=False, add_generation_prompt=True
    )
    tools_block = re.search(r"<tools>\n(.*?)\n</tools>", rendered, re.DOTALL).group(1)
    assert [json.loads(line)["function"]["name"] for line in tools_block.splitlines()] == ["search"]


@pytest.mark.slow
def test_grpo_trainer_step_with_the_environment_factory(tmp_path, tool_tokenizer):
    engine = RecordingEngine()
    seen_by_rewards = []

    def searches(completions, environments, **kwargs):  # TRL hands reward functions the episodes' environments
        seen_by_rewards.append([(env.question, env.num_searches) for env in environments])
        return [0.0] * len(completions)

    trainer = tool_trainer(tmp_path, tool_tokenizer, engine, reward_funcs=(f1_reward, searches), max_steps=1)
    batches = []
    generate_and_score = trainer._generate_and_score_completions

    def recording(inputs):
        batches.append(generate_and_score(inputs))
        return batches[-1]

    trainer._generate_and_score_completions = recording
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    assert [p for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())], "no update"
    requests = sorted((r for batch in engine.batches for r in batch), key=lambda r: r.query)
    assert requests == [
        SearchRequest("alpha place", "Where is Alpha?", ("Paris",)),
        SearchRequest("beta place", "Where is Beta?", ("Rome",)),
    ]
    assert sorted(seen_by_rewards[0]) == [
        ("Where is Alpha?", 0),
        ("Where is Alpha?", 1),
        ("Where is Beta?", 0),
        ("Where is Beta?", 1),
    ]

    batch, searched_rows = batches[0], 0
    for ids, completion_mask, tool_mask in zip(batch["completion_ids"], batch["completion_mask"], batch["tool_mask"]):
        ids, real, model_made = ids.tolist(), completion_mask.bool().tolist(), tool_mask.bool().tolist()
        model_text = tool_tokenizer.decode([t for t, r, m in zip(ids, real, model_made) if r and m])
        tool_text = tool_tokenizer.decode([t for t, r, m in zip(ids, real, model_made) if r and not m])
        if "<tool_call>" in model_text:  # a row that searched: the tool result is masked, the rest is not
            searched_rows += 1
            assert "<tool_response>\nDoc 1 (Title: " in tool_text and "useful text 5" in tool_text
            assert "useful text" not in model_text and re.search(r"<answer> (Paris|Rome) </answer>", model_text)
        else:
            assert tool_text == "" and "<answer> London </answer>" in model_text
    assert searched_rows == 2
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert logged["tools/call_frequency"] == 0.5 and logged["tools/failure_frequency"] == 0.0
    assert 0.0 < logged["rewards/f1_reward/mean"] < 1.0


def _play_in_this_process(pickled: bytes, question: str) -> tuple[str, int]:
    """Run in a spawned process: unpickle the factory, play one search, say which process built the engine."""
    import os
    import pickle

    factory = pickle.loads(pickled)
    env = factory()
    env.reset(prompt=[], question=question, golden_answers=["someone"])
    return env.search(question), os.getpid()


def test_a_factory_built_from_engine_settings_pickles_and_plays_in_a_spawned_process(tmp_path):
    """TRL's AsyncGRPOTrainer pickles environment_factory into a spawned worker: the engine is built there."""
    import functools
    import multiprocessing
    import os
    import pickle

    from zerosearch_trl.demo import make_demo_task
    from zerosearch_trl.engines.factory import EngineSettings, make_engine

    task = make_demo_task(8, seed=0)
    corpus = task.save(tmp_path) / "corpus.jsonl"
    factory = SimulatedSearchEnv(
        engine_factory=functools.partial(make_engine, EngineSettings(engine="bm25", corpus=str(corpus), search_top_k=2))
    )
    pickled = pickle.dumps(factory)
    assert factory._shared._engine is None  # nothing was built to pickle it
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        text, pid = pool.apply(_play_in_this_process, (pickled, task.dataset[0]["question"]))
    assert pid != os.getpid() and text.startswith("Doc 1 (Title:") and "Doc 2" in text
    # In this process too, the environments of one factory share the one engine they build.
    first, second = factory(), factory()
    assert first.engine is second.engine is factory.engine


def test_an_environment_holding_an_engine_instance_says_how_to_cross_processes():
    import pickle

    engine = SimulatedSearchEngine(ScriptedGenerator(lambda prompts: ["Doc 1 (Title: T) text"] * len(prompts)))

    with pytest.raises(TypeError, match="engine_factory=.*picklable"):
        pickle.dumps(SimulatedSearchEnv(engine))
    with pytest.raises(ValueError, match="exactly one of engine="):
        SimulatedSearchEnv()
    with pytest.raises(ValueError, match="exactly one of engine="):
        SimulatedSearchEnv(engine, engine_factory=lambda: engine)
