"""Shared fixtures: the real SmolLM2 tokenizer, tiny random Llama/Qwen2 models, and ../shared data by path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import make_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL; we know


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: skipped where absent (a user's clone), a failure under CI=true, where it must exist."""
    if not SHARED_DATA.is_dir():
        if IN_CI:
            pytest.fail(f"CI=true but the shared data folder {SHARED_DATA} is missing.")
        pytest.skip(f"{SHARED_DATA} is absent (it exists only in the project's own workspace).")
    return SHARED_DATA


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded model's cached safetensors folder (built once per machine, ~1 min the first time)."""
    from zerosearch_trl.models import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    """The real SmolLM2 tokenizer (with its chat template), left padding."""
    from zerosearch_trl.models import load_tokenizer

    return load_tokenizer(default_model_dir)


@pytest.fixture(params=["llama", "qwen2"])
def tiny_model(request, tokenizer):
    return make_tiny_model(tokenizer, request.param)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny Llama saved as an ordinary model folder (for code paths that take a path)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def scripted_policies_turn_by_turn(monkeypatch):
    """Where a test scripts its policy by replacing ``model.generate`` on the instance, the rollout's continuous
    path plays that script through :class:`helpers.GenerateAsTurns` (episodes out of step, as under continuous
    batching); any other model gets the real continuous generator."""
    from helpers import GenerateAsTurns
    from zerosearch_trl.generation import continuous
    from zerosearch_trl.rollout import policy

    real = continuous.ContinuousTransformersGenerator

    def turns_for(model, tokenizer, **kwargs):
        if "generate" in vars(model):
            return GenerateAsTurns(model, tokenizer)
        return real(model, tokenizer, **kwargs)

    monkeypatch.setattr(policy, "ContinuousTransformersGenerator", turns_for)  # training's rollout
    monkeypatch.setattr(continuous, "ContinuousTransformersGenerator", turns_for)  # evaluation looks it up here
