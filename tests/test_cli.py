import json
import subprocess
import sys

import pytest

from zerosearch_trl import __version__
from zerosearch_trl.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "probe" in out and "make-demo" in out


def test_unknown_command(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_entry_point_is_installed():
    result = subprocess.run([sys.executable, "-m", "zerosearch_trl.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == __version__


def test_make_demo_from_yaml_recipe(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"output_dir: {tmp_path / 'out'}\nn_questions: 10\nseed: 3\n")
    assert main(["make-demo", "--config", str(recipe)]) == 0
    lines = (tmp_path / "out" / "questions.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["id"] == "demo-3-0"


def test_probe_counts_actions_on_a_tiny_model(tmp_path, tiny_model_dir):
    out = tmp_path / "probe.json"
    assert (
        main(
            [
                "probe",
                "--model",
                str(tiny_model_dir),
                "--n_samples",
                "3",
                "--max_new_tokens",
                "4",
                "--output_file",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert sum(report["counts"].values()) == 3 and len(report["samples"]) == 3
    assert abs(sum(report["shares"].values()) - 1.0) < 1e-9


def test_simulate_prints_numbered_labelled_documents(capsys, tiny_model_dir):
    # A tiny random model writes garbage: the engine falls back, and the CLI still prints top_k documents.
    assert (
        main(
            [
                "simulate",
                "--query",
                "Lyon country",
                "--question",
                "Where is Lyon?",
                "--answer",
                "France",
                "--model",
                str(tiny_model_dir),
                "--top_k",
                "3",
                "--max_new_tokens",
                "8",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [["Doc", "1"], ["Doc", "2"], ["Doc", "3"]]
    assert all(line.endswith("[useful, fallback]") for line in lines)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top_k", "0"], "top_k"),
        (["--backend", "tensorrt"], "tensorrt"),
        (["--backend", "openai"], "base_url"),
        (["--prompt_format", "chatml"], "prompt_format"),
        (["--temperature", "-1"], "temperature"),
    ],
)
def test_simulate_rejects_bad_settings_before_loading_a_model(flags, message):
    # The model path does not exist: a bad setting must be reported before any attempt to load it.
    with pytest.raises(ValueError, match=message):
        main(["simulate", "--query", "q", "--model", "/nonexistent/model", *flags])


@pytest.mark.slow
def test_simulate_on_the_embedded_model(default_model_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zerosearch_trl.cli",
            "simulate",
            "--query",
            "Eiffel Tower height",
            "--question",
            "How tall is the Eiffel Tower?",
            "--answer",
            "330 metres",
            "--noisy",
            # ~30-word documents need ~60 tokens; the default budget (600, the paper's for five documents in one
            # generation) lets a rambling retry run for minutes on a busy CPU.
            "--max_new_tokens",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith(f"Doc {i} ") for i, line in enumerate(lines, 1))
    assert all("[noisy" in line for line in lines)
