"""The examples: recipes parse into valid configurations, the custom reward plugs into the job, and the one-page
GRPO script trains on the embedded model."""

from __future__ import annotations

import sys

import pytest
import yaml

from conftest import REPO_ROOT
from zerosearch_trl.commands.train import make_parser
from zerosearch_trl.rollout.episode import check_episode_budget
from zerosearch_trl.training.config import check_config, resolve_rewards

EXAMPLES = REPO_ROOT / "examples"
RECIPES = sorted((EXAMPLES / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_parses_with_every_key_known(recipe, monkeypatch):
    # TrlParser would leave unknown YAML keys aside; the recipes must hold none.
    parser = make_parser()
    known = {action.dest for action in parser._actions}
    assert set(yaml.safe_load(recipe.read_text())) <= known
    script, engine, curriculum, training, model = parser.parse_args_and_config(["--config", str(recipe)])
    assert training.num_generations > 1 and curriculum.noise_end == 0.5
    # Every recipe's episodes fit max_turns searches and the answer (#20.4), the GPU ones included.
    check_episode_budget(training.max_completion_length, script.max_turns, script.max_turn_tokens,
                         script.max_observation_tokens)  # fmt: skip
    if not model.model_name_or_path:  # the CPU recipe: every check passes here (the GPU ones load model configs)
        check_config(script, engine, curriculum, training, model)


SIMULATOR_RECIPES = sorted((EXAMPLES / "recipes" / "simulator").glob("*.yaml"))


@pytest.mark.parametrize("recipe", SIMULATOR_RECIPES, ids=[r.stem for r in SIMULATOR_RECIPES])
def test_simulator_recipe_parses_with_every_key_known(recipe):
    from trl import TrlParser

    from zerosearch_trl.commands.simulator import CollectArguments, SimulatorSFTArguments
    from zerosearch_trl.engines.factory import EngineSettings, check_engine_settings

    kinds = {"collect": [CollectArguments, EngineSettings], "sft": [SimulatorSFTArguments]}
    parser = TrlParser(kinds[recipe.stem.split("_")[0]])
    known = {action.dest for action in parser._actions}
    assert set(yaml.safe_load(recipe.read_text())) <= known
    parsed = parser.parse_args_and_config(["--config", str(recipe)])
    if isinstance(parsed[0], CollectArguments):
        assert parsed[0].model.startswith("Qwen/") and parsed[1].engine == "bm25" and parsed[1].search_top_k == 5
        check_engine_settings(parsed[1])
    else:
        assert parsed[0].model.startswith("Qwen/") and parsed[0].merge and parsed[0].top_k == 5


def test_simulator_recipes_cover_lora_and_qlora():
    assert {r.stem for r in SIMULATOR_RECIPES} == {"collect_qwen2.5-3b", "sft_qwen2.5-3b_lora", "sft_qwen2.5-7b_qlora"}


def test_qlora_recipe_on_cpu_fails_before_anything_loads(tmp_path):
    import torch

    from zerosearch_trl.commands.simulator import sft_main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the QLoRA recipe runs")
    recipe = EXAMPLES / "recipes" / "simulator" / "sft_qwen2.5-7b_qlora.yaml"
    # --pairs names no file: the QLoRA check must come first, before looking for data or a model.
    with pytest.raises(ValueError, match="QLoRA .* needs a CUDA GPU"):
        sft_main(["--config", str(recipe), "--pairs", str(tmp_path / "none.jsonl"), "--output_dir", str(tmp_path)])


def test_accelerate_configs_are_valid_yaml():
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (EXAMPLES / "accelerate").glob("*.yaml")}
    assert set(configs) == {"single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp"}
    assert configs["deepspeed_zero3"]["deepspeed_config"]["zero_stage"] == 3
    assert configs["fsdp"]["distributed_type"] == "FSDP"


def test_custom_reward_resolves_from_the_working_directory(monkeypatch):
    monkeypatch.chdir(EXAMPLES)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(EXAMPLES))])
    f1, cost = resolve_rewards(["f1", "custom_reward:search_cost_reward"])
    completions = ["<answer> Paris </answer>", "<answer> Rome </answer>"]
    assert f1(completions, golden_answers=[["Paris"], ["Paris"]]) == [1.0, 0.0]
    assert cost(completions, num_searches=[1, 3]) == pytest.approx([-0.05, -0.15])


@pytest.mark.slow
def test_train_grpo_example_runs_on_the_embedded_model(tmp_path, default_model_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import train_grpo

    train_grpo.main(max_steps=1, n_questions=8, warm_start_steps=2, output_dir=str(tmp_path / "run"))
    assert (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
def test_quickstart_notebook_runs_top_to_bottom(tmp_path, default_model_dir):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO_ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "before:" in outputs and "after: " in outputs and "curriculum/noise_p" in outputs
