"""No secret is written or logged: two real training runs through the CLI, one searching a web API (a fake on
loopback that checks its key) and one a `serve` server that wants its API key, sweep every file they write
(checkpoints, metrics.jsonl, report.md, summary.json, the sqlite result cache) and everything they printed or
logged, for both keys."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest

from test_train import tiny_args
from test_web import KEY as WEB_KEY
from test_web import FakeSearchAPI
from zerosearch_trl.cli import main
from zerosearch_trl.demo import make_demo_task
from zerosearch_trl.engines.access import SERVE_API_KEY_ENV
from zerosearch_trl.engines.bm25 import BM25Engine
from zerosearch_trl.engines.server import background_server


def files_holding(folder: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def run_and_sweep(argv: list[str], out: Path, secret: str, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 logs request lines at DEBUG: everything a handler could see
    assert main(argv) == 0
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert {"metrics.jsonl", "report.md", "summary.json", "cache.sqlite"} <= set(written), written
    assert any(p.name == "trainer_state.json" for p in out.rglob("*"))  # a checkpoint was swept too
    assert files_holding(out, secret) == []
    printed = capsys.readouterr()
    assert secret not in caplog.text and secret not in printed.out and secret not in printed.err


@pytest.mark.slow
def test_a_web_search_key_is_never_written_or_logged(tmp_path, tiny_model_dir, monkeypatch, caplog, capsys):
    api = FakeSearchAPI()
    try:
        monkeypatch.setenv("SERPER_API_KEY", WEB_KEY)
        out = tmp_path / "web"
        argv = tiny_args(tiny_model_dir, out, "--engine", "web", "--search_url", f"{api.url}/search", "--max_steps",
                         "1", "--probe_samples", "0", "--cache_path", str(out / "cache.sqlite"))  # fmt: skip
        run_and_sweep(argv, out, WEB_KEY, caplog, capsys)
        assert all(key == WEB_KEY for *_, key in api.calls)  # any search the random policy made carried the key
    finally:
        api.close()


@pytest.mark.slow
def test_the_serve_key_is_never_written_or_logged(tmp_path, tiny_model_dir, monkeypatch, caplog, capsys):
    key = "zs-" + secrets.token_hex(8)
    monkeypatch.setenv(SERVE_API_KEY_ENV, key)
    engine = BM25Engine.from_corpus(make_demo_task(8, seed=0).corpus, top_k=2)
    with background_server(engine, api_key=key) as url:
        out = tmp_path / "remote"
        argv = tiny_args(tiny_model_dir, out, "--engine", "remote", "--search_url", f"{url}/retrieve", "--max_steps",
                         "1", "--probe_samples", "0", "--cache_path", str(out / "cache.sqlite"))  # fmt: skip
        run_and_sweep(argv, out, key, caplog, capsys)
    assert "The retrieval server answers" in caplog.text  # the job's health check went through with the key
