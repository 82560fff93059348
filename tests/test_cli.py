import json
import subprocess
import sys

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
