"""``zerosearch-trl train``: configuration checks before any model loads, and real short runs on a tiny model.

The runs go through the real CLI entry point, TRL's parser, GRPOTrainer, the rollout, the simulated engine (the
tiny random model writes its documents, so they are mostly placeholders), the curriculum, the guards and the
report. The tiny policy writes random tokens, so rewards are 0: these tests check the plumbing, not learning.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from zerosearch_trl.cli import main
from zerosearch_trl.commands.train import make_parser
from zerosearch_trl.prompts import PromptSettings
from zerosearch_trl.training.config import check_config, model_load_kwargs


def parse(*argv: str):
    return make_parser().parse_args_and_config(list(argv))


def tiny_args(model_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model_name_or_path", str(model_dir),
        "--output_dir", str(output_dir),
        "--demo_questions", "8",
        "--heldout_questions", "4",
        "--probe_samples", "2",
        "--max_steps", "2",
        "--per_device_train_batch_size", "2",
        "--num_generations", "2",
        "--max_turn_tokens", "16",
        "--max_observation_tokens", "16",
        "--max_completion_length", "81",  # 2 x (16 + 16) + 16 + 1: two searches and the answer fit
        "--simulator_max_new_tokens", "24",
        "--search_top_k", "2",
        "--schedule", "linear",
        "--noise_end", "0.5",
        "--save_steps", "1",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--schedule", "sine"], "Unknown schedule 'sine'"),
        (["--noise_start", "0.5", "--noise_end", "0.1"], "noise_end \\(0.1\\) is below noise_start \\(0.5\\)"),
        (["--rewards", "f2"], "Unknown reward 'f2'"),
        (["--rewards", "no_such_module:reward"], "Cannot import the reward"),
        (["--search_top_k", "0"], "top_k"),
        (["--noise_prob", "0.2"], "the curriculum sets the noise probability"),
        (["--algorithm", "ppo2"], "--algorithm must be one of grpo, reinforce, ppo, got 'ppo2'"),
        (["--algorithm", "ppo", "--loss_type", "sapo"], "loss_type='sapo' is not PPO's clipped surrogate"),
        (["--engine", "bing"], "--engine must be one of .* got .bing."),
        (["--simulator_backend", "openai"], "needs --simulator_base_url"),
        (["--use_peft", "--lora_target_modules", "q_proj", "qkv"], "\\['qkv'\\] do not exist"),
        (["--per_device_train_batch_size", "6", "--num_generations", "4"], "divisible by num_generations \\(4\\)"),
        (["--use_peft", "--load_in_4bit", "--dtype", "auto"], "QLoRA computes in --dtype, which is 'auto'"),
        (["--heldout_engines", "bm25,bm25"], "--heldout_engines 'bm25,bm25': name each of bm25, dense, simulated"),
        (["--heldout_engines", "google"], "--heldout_engines 'google'.* e.g. --heldout_engines bm25,simulated"),
        (["--heldout_engines", ","], "--heldout_engines ','"),
        (
            ["--heldout_engines", "bm25"],
            "--heldout_engines needs the held-out evaluation, which is off: add --heldout_eval true",
        ),
        (["--heldout_eval_steps", "2"], "--heldout_eval_steps needs the held-out evaluation"),
        (["--mask_observations", "false", "--use_vllm", "true"], "--mask_observations false .* HF generation only"),
        (
            ["--continuous_batching", "true", "--use_vllm", "true", "--vllm_mode", "server"],
            "--continuous_batching true with --vllm_mode server",
        ),
    ],
)
def test_bad_configuration_fails_before_any_model_loads(monkeypatch, tiny_model_dir, argv, message):
    import zerosearch_trl.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ValueError, match=message):
        check_config(*parse("--model_name_or_path", str(tiny_model_dir), *argv))


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "DeepSpeed ZeRO-3"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": "zero3.json"}, "DeepSpeed ZeRO-3"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, None),
        ({}, None),
    ],
)
def test_continuous_batching_where_generation_gathers_shards_fails_before_any_model_loads(
    tmp_path, monkeypatch, tiny_model_dir, env, refused
):
    import zerosearch_trl.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zero3.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    parsed = parse("--model_name_or_path", str(tiny_model_dir), "--continuous_batching", "true")
    for name, value in env.items():  # what accelerate launch sets (after parsing: DeepSpeed is not installed here)
        monkeypatch.setenv(name, value)
    if refused is None:
        check_config(*parsed)
        return
    with pytest.raises(ValueError, match=f"--continuous_batching true under {refused}: .* leave --continuous_batching"):
        check_config(*parsed)
    parsed[0].continuous_batching = None  # unset, the rollout picks lockstep there by itself
    check_config(*parsed)


def test_dataset_without_gold_answers_is_named(tmp_path, monkeypatch, tiny_model_dir):
    import zerosearch_trl.models as models
    from zerosearch_trl.data import QADataError

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "Who?", "golden_answers": []}) + "\n")
    with pytest.raises(QADataError, match="1 of 1 rows .* have no gold answers"):
        main(tiny_args(tiny_model_dir, tmp_path / "out", "--dataset", str(data)))


@pytest.mark.slow
def test_continuous_batching_false_trains_in_lockstep(tmp_path, tiny_model_dir, monkeypatch):
    """The flag that gives bench_rollout's baseline at the job's own settings (a GPU's seconds per step, lockstep
    vs scheduler) reaches the rollout: no continuous generator is ever made, and the step still trains."""
    import zerosearch_trl.rollout.policy as policy

    def refuse(*args, **kwargs):
        raise AssertionError("--continuous_batching false built a continuous generator")

    monkeypatch.setattr(policy, "ContinuousTransformersGenerator", refuse)
    out = tmp_path / "run"
    assert main(tiny_args(tiny_model_dir, out, "--continuous_batching", "false", "--max_steps", "1")) == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "reward" in r] == [1]


@pytest.mark.slow
def test_cli_run_trains_with_the_curriculum_and_writes_everything(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    assert main(tiny_args(tiny_model_dir, out, "--heldout_eval", "true")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    # linear 0 -> 0.5 over 2 steps counted 1..m, as in the reference: 0.25 during step 1, p_end during step 2
    assert [r["curriculum/noise_p"] for r in steps] == [0.25, 0.5]
    assert all("search/episodes_with_search" in r and "search/well_formed_episodes" in r for r in steps)
    assert (out / "model.safetensors").exists() and (out / "checkpoint-1").is_dir()
    # The model and every checkpoint say how they were prompted, so that eval plays them alike (#20.8).
    for folder in (out, out / "checkpoint-1"):
        assert PromptSettings.read(folder) == PromptSettings("zero_shot", "<think>")
    report = (out / "report.md").read_text()
    assert "curriculum/noise_p" in report and "plots/reward.png" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["warm_start"] is False
    assert set(summary["first_turn_shares"]["start"]) == {"search", "answer", "invalid"}
    # the held-out questions are scored greedily at the start and the end, every row
    assert list(summary["heldout"]) == ["0", "2"] and summary["heldout"]["2"]["n"] == 4
    assert "heldout/f1" in steps[-1] and "heldout/f1" not in steps[0]
    # ... against BM25 over the demo corpus first, the simulator (told the answers) only as a labelled second (#20.5)
    assert list(summary["heldout_by_engine"]) == ["bm25", "simulator_told_answer"]
    assert summary["heldout_by_engine"]["bm25"] == summary["heldout"]
    assert "heldout/simulator_told_answer/f1" in steps[-1]
    assert "against the simulator, told the answers: an upper bound" in report
    printed = capsys.readouterr().out
    assert "Held-out first turns that search" in printed and "held-out, greedy, 4 questions" in printed


@pytest.mark.slow
def test_resume_continues_the_schedule(tmp_path, tiny_model_dir):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    main(tiny_args(tiny_model_dir, full, "--max_steps", "3", "--probe_samples", "0"))
    main(
        tiny_args(
            tiny_model_dir, resumed, "--max_steps", "3", "--probe_samples", "0",
            "--resume_from_checkpoint", str(full / "checkpoint-2"),
        )
    )  # fmt: skip

    def noise(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["curriculum/noise_p"] for r in rows if "reward" in r}

    assert noise(resumed) == {3: noise(full)[3]}
    assert noise(full)[3] == pytest.approx(0.5)  # linear to 0.5: the last of 3 steps trains at p_end


@pytest.mark.slow
def test_lora_run_saves_an_adapter_and_keeps_the_base(tmp_path, tiny_model_dir):
    out = tmp_path / "lora"
    main(tiny_args(tiny_model_dir, out, "--use_peft", "--lora_target_modules", "q_proj", "v_proj",
                   "--learning_rate", "1e-2", "--probe_samples", "0"))  # fmt: skip
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)


def test_hybrid_engine_and_its_noise_free_heldout_twin_share_the_simulator_and_the_index(tiny_model_dir):
    from trl import ModelConfig

    from zerosearch_trl.engines.hybrid import HybridEngine
    from zerosearch_trl.training.config import EngineArguments
    from zerosearch_trl.training.engines import build_engines, simulator_resolved

    settings = EngineArguments(engine="hybrid", real_prob=0.5, search_top_k=2, simulator_batch_size=4)
    engine, heldout = build_engines(simulator_resolved(settings, ModelConfig(model_name_or_path=str(tiny_model_dir))))
    assert isinstance(engine, HybridEngine) and isinstance(heldout, HybridEngine) and heldout is not engine
    assert heldout.real is engine.real  # one BM25 index, built once
    assert heldout.simulated.generator is engine.simulated.generator  # one copy of the simulator's weights
    assert engine.simulated.generator.model.name_or_path == str(tiny_model_dir)  # 'policy': the initial policy
    engine.noise_prob = 0.5  # what the curriculum does
    assert heldout.noise_prob == 0.0 and heldout.real_prob == engine.real_prob == 0.5


def test_bm25_without_a_corpus_indexes_the_demo_task_the_questions_come_from():
    """A demo world's facts depend on its size: the default demo corpus (256 people) is another world than the
    job's task (288 questions by default), so training against BM25 would search facts the questions never ask."""

    from zerosearch_trl.demo import make_demo_task
    from zerosearch_trl.engines.base import SearchRequest
    from zerosearch_trl.training.config import EngineArguments
    from zerosearch_trl.training.engines import build_engines

    task = make_demo_task(40, seed=0)
    engine, heldout = build_engines(EngineArguments(engine="bm25", search_top_k=3), task)
    assert heldout is engine
    assert len(engine) == len(task.corpus)
    question, gold = task.dataset[0]["question"], task.dataset[0]["golden_answers"][0]
    (documents,) = engine.search([SearchRequest(question)])
    assert any(gold in document.text for document in documents), (question, gold, documents)


def test_heldout_engines_names_the_yardsticks_in_order(tiny_model_dir):

    from zerosearch_trl.demo import make_demo_task
    from zerosearch_trl.engines.base import engine_kind
    from zerosearch_trl.training.config import EngineArguments
    from zerosearch_trl.training.engines import SIMULATOR_TOLD_ANSWER, build_engines, heldout_engines

    task = make_demo_task(12, seed=0)
    settings = EngineArguments(engine="bm25", search_top_k=2, simulator_model=str(tiny_model_dir), noise_prob=0.5)
    engine, heldout = build_engines(settings, task)
    engines = heldout_engines(engine, heldout, task, settings, "bm25, simulated")
    assert list(engines) == ["bm25", SIMULATOR_TOLD_ANSWER]
    assert engines["bm25"] is engine  # trained against BM25: scored against that very index
    simulated = engines[SIMULATOR_TOLD_ANSWER]
    assert engine_kind(simulated) == "simulated" and simulated.noise_prob == 0.0
    assert simulated.generator.model.name_or_path == str(tiny_model_dir)
    # A simulator-trained run scored against BM25 first: the demo task's own world, the simulator it trains with.
    settings = EngineArguments(engine="simulated", search_top_k=2, simulator_model=str(tiny_model_dir))
    engine, heldout = build_engines(settings, task)
    engines = heldout_engines(engine, heldout, task, settings, "simulated,bm25")
    assert list(engines) == [SIMULATOR_TOLD_ANSWER, "bm25"] and engines[SIMULATOR_TOLD_ANSWER] is heldout
    assert len(engines["bm25"]) == len(task.corpus)


@pytest.mark.slow
def test_reinforce_against_bm25_runs_without_a_curriculum(tmp_path, tiny_model_dir, caplog):
    out = tmp_path / "bm25"
    flags = ["--engine", "bm25", "--algorithm", "reinforce", "--reinforce_baseline", "none"]
    with caplog.at_level("WARNING"):
        assert main(tiny_args(tiny_model_dir, out, *flags, "--max_steps", "1", "--probe_samples", "0")) == 0
    assert "| algorithm | reinforce (baseline: none) |" in (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["engine"] == {"name": "bm25", "stats": None}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1]
    assert not any("curriculum/noise_p" in r for r in rows)
    assert "the noise curriculum is off" in caplog.text


@pytest.mark.slow
def test_ppo_run_reports_the_critic(tmp_path, tiny_model_dir):
    out = tmp_path / "ppo"
    assert main(tiny_args(tiny_model_dir, out, "--algorithm", "ppo", "--max_steps", "1", "--probe_samples", "0")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if "reward" in r)
    assert {"ppo/value_loss", "ppo/explained_variance", "ppo/kl", "curriculum/noise_p"} <= set(step)
    report = (out / "report.md").read_text()
    assert "| algorithm | ppo |" in report and "`ppo/value_loss`" in report and "](plots/critic.png)" in report
    assert (out / "critic" / "config.json").exists() and (out / "checkpoint-1" / "critic_state.pt").exists()


def test_model_flags_reach_from_pretrained():
    """--attn_implementation, --model_revision and QLoRA's --load_in_4bit are passed to from_pretrained."""
    from trl import ModelConfig

    assert model_load_kwargs(ModelConfig()) == {}
    kwargs = model_load_kwargs(
        ModelConfig(load_in_4bit=True, dtype="bfloat16", attn_implementation="sdpa", model_revision="v1")
    )
    assert kwargs["attn_implementation"] == "sdpa" and kwargs["revision"] == "v1"
    assert kwargs["quantization_config"].load_in_4bit and kwargs["device_map"] is None  # no GPU here: CPU


def test_resume_latest_with_no_complete_checkpoint_is_named_before_any_model_loads(tmp_path, tiny_model_dir):
    (tmp_path / "out" / "checkpoint-3").mkdir(parents=True)  # half-written: no trainer_state.json
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        main(tiny_args(tiny_model_dir, tmp_path / "out", "--resume_from_checkpoint", "latest"))


@pytest.mark.slow
def test_resume_latest_picks_the_newest_complete_checkpoint_and_logs_each_step_once(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    main(tiny_args(tiny_model_dir, out, "--max_steps", "2", "--probe_samples", "0"))
    (out / "checkpoint-3").mkdir()  # a checkpoint the run was killed while writing
    main(tiny_args(tiny_model_dir, out, "--max_steps", "3", "--probe_samples", "0", "--resume_from_checkpoint", "true"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3]  # step 3 once; steps 1-2 kept, none repeated
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


@pytest.mark.slow
def test_resuming_a_run_whose_last_checkpoint_ends_it_trains_no_extra_step(tmp_path, tiny_model_dir):
    """Found by benchmarks/bench_reliability.py: a run killed after its last checkpoint, resumed, trained (and
    logged) a step past max_steps, since the transformers Trainer checks max_steps only after a step."""
    out = tmp_path / "run"
    main(tiny_args(tiny_model_dir, out, "--max_steps", "2", "--probe_samples", "0"))
    (out / "summary.json").unlink()  # as if killed while writing its outputs
    main(
        tiny_args(tiny_model_dir, out, "--max_steps", "2", "--probe_samples", "0", "--resume_from_checkpoint", "latest")
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert (out / "model.safetensors").exists()
