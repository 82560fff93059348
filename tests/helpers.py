"""Test helpers: tiny random models over the real tokenizer, a scripted text generator, CPU trainer configs and a
real loopback HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from zerosearch_trl.generation import Generation


def make_tiny_model(tokenizer, architecture: str = "llama", seed: int = 0):
    """A random 2-layer model over the real tokenizer's vocabulary: loads and generates in milliseconds."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


class ScriptedGenerator:
    """Answers each prompt with the next scripted text (or a function of the prompts).

    Scripts hold whole outputs; like a real backend, the part that a prompt prefilled is not returned.
    """

    name = "scripted"

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, prompts, params):
        self.calls.append(prompts)
        texts = self.script(prompts) if callable(self.script) else [self.script.pop(0) for _ in prompts]
        prefills = [p[-1]["content"] if p[-1]["role"] == "assistant" else "" for p in prompts]
        return [Generation(text=t[len(f) :] if t.startswith(f) else t) for t, f in zip(texts, prefills)]


# A small passage corpus with one distinctive fact per passage, for the real-engine tests.
PASSAGE_ROWS = [
    {"id": "lyon", "title": "Lyon", "text": "Lyon is the third largest city of France, at the Rhone and Saone."},
    {
        "id": "kyoto",
        "title": "Kyoto",
        "text": "Kyoto was the imperial capital of Japan for more than a thousand years.",
    },
    {"id": "nile", "title": "Nile", "text": "The Nile flows north through Egypt into the Mediterranean Sea."},
    {"id": "bach", "title": "Johann Sebastian Bach", "text": "Bach composed the Brandenburg Concertos in Leipzig."},
    {
        "id": "curie",
        "title": "Marie Curie",
        "text": "Curie won Nobel prizes in physics and chemistry for radioactivity.",
    },
    {
        "id": "everest",
        "title": "Mount Everest",
        "text": "Everest, in the Himalayas, is the highest mountain above sea level.",
    },
    {"id": "python", "title": "Python", "text": "Python is a programming language created by Guido van Rossum."},
]


def cpu_config(output_dir, config_class=None, **overrides):
    """A TRL trainer config for a real run in a test: CPU, fp32, seeded, logs every step, reports and saves nothing
    unless ``overrides`` say so. ``config_class`` defaults to ``trl.GRPOConfig``."""
    if config_class is None:
        from trl import GRPOConfig as config_class
    settings = {
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "seed": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        **overrides,
    }
    return config_class(output_dir=str(output_dir), **settings)


def rank_policy(out):
    """``(model, tokenizer)`` for a process of a distributed test: the same tiny model on every rank (one seed; DDP
    starts from identical weights anyway), saved in the rank's own folder and loaded from it, since with beta > 0
    TRL loads the reference model, and PPO its critic, from the policy's folder."""
    import os

    from transformers import AutoModelForCausalLM

    from zerosearch_trl.models import default_model_path, load_tokenizer

    tokenizer = load_tokenizer(default_model_path())
    folder = out / f"policy-{os.environ.get('LOCAL_RANK', '0')}"
    make_tiny_model(tokenizer).save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder), tokenizer


def tiny_grpo_trainer(tokenizer, output_dir, reward_funcs, callbacks=(), **config):
    """A real GRPOTrainer on a tiny random model over two plain-text prompts: 2 steps of 8 tokens on CPU."""
    import datasets
    from trl import GRPOTrainer

    settings = {"max_steps": 2, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 8}
    return GRPOTrainer(
        model=make_tiny_model(tokenizer),
        reward_funcs=list(reward_funcs),
        args=cpu_config(output_dir, **{**settings, **config}),
        train_dataset=datasets.Dataset.from_dict({"prompt": ["Where is Paris?", "Who wrote Hamlet?"] * 2}),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler with a one-call answer (a dict is sent as JSON, a string as is) and a silent log."""

    def answer(self, status, payload):
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 at a free port, serving ``handler_class`` from a daemon thread."""

    def __init__(self, handler_class):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class GenerateAsTurns:
    """A turn generator (``zerosearch_trl.rollout.scheduler.TurnGenerator``) over a model's scripted ``generate``.

    Tests script their policy by replacing ``model.generate``; the real continuous generator runs the model's
    ``forward`` instead, which no script drives. This stand-in generates each request alone through the real
    ``TransformersGenerator`` (so stop strings and budgets are applied as in the synchronous rollout) and returns
    finished requests ``per_step`` at a time in a shuffled order, so that episodes advance out of step with each
    other, as they do under continuous batching. The real generator is tested on the embedded model in
    ``test_scheduler.py``.
    """

    def __init__(self, model, tokenizer, *, seed: int = 0, per_step: int = 2) -> None:
        import random

        from zerosearch_trl.generation.transformers import TransformersGenerator

        self.generator = TransformersGenerator(model, tokenizer, batch_size=1)
        self.rng, self.per_step = random.Random(seed), per_step
        self.waiting: list = []
        self.submitted: list = []  # every (key, input ids) in the order it came

    @property
    def idle(self) -> bool:
        return not self.waiting

    def submit(self, key, input_ids, params) -> None:
        self.waiting.append((key, list(input_ids), params))
        self.submitted.append((key, list(input_ids)))

    def step(self):
        self.rng.shuffle(self.waiting)
        now, self.waiting = self.waiting[: self.per_step], self.waiting[self.per_step :]
        return [(key, self.generator.generate_ids([ids], params)[0]) for key, ids, params in now]

    def release(self, key) -> None:
        pass

    def reset(self) -> None:
        self.waiting = []


class FaultProxy:
    """A real HTTP proxy on loopback in front of ``upstream`` that injects one kind of fault at a time (set
    :attr:`mode`): ``"pass"`` forwards; ``"down"`` drops the connection unanswered (a server that died); ``"slow"``
    answers only after ``slow_seconds`` (past a client's timeout); ``"garbage"`` answers 200 with HTML; ``"error"``
    answers 500; ``"mixed"`` draws each request's fault (with probability ``fault_rate``, the kinds in turn; else
    it passes), so that a sparse stream of requests still meets every kind; any other mode forwards, counted under
    its name (``"restart"``: while the caller restarts the upstream, whose absence the proxy reports as 502).
    :attr:`counts` holds the requests seen per mode (per drawn kind in ``"mixed"``), :attr:`bodies` their JSON bodies. Tests and ``benchmarks/bench_reliability.py``
    use it to fault a ``zerosearch-trl serve`` or an OpenAI-compatible simulator server mid-run."""

    MODES = ("pass", "down", "slow", "garbage", "error")

    def __init__(self, upstream, slow_seconds=5.0, fault_rate=0.4, seed=0):
        import collections
        import itertools
        import random

        import requests

        proxy = self
        self.upstream, self.slow_seconds, self.mode = upstream.rstrip("/"), slow_seconds, "pass"
        self.counts = collections.Counter()
        self.bodies: list[dict] = []  # every JSON request body, in arrival order
        rng, kinds = random.Random(seed), itertools.cycle(self.MODES[1:])

        def draw():
            return next(kinds) if rng.random() < fault_rate else "pass"

        self._lock = threading.Lock()

        class Handler(JSONHandler):
            protocol_version = "HTTP/1.1"

            def forward(self):
                try:
                    self._forward()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (a "slow" answer past its timeout): nothing left to send

            def _forward(self):
                with proxy._lock:
                    mode = draw() if proxy.mode == "mixed" else proxy.mode
                    proxy.counts[mode] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if body:
                    with proxy._lock:
                        proxy.bodies.append(json.loads(body))
                if mode == "down":
                    self.close_connection = True  # no status line: the client sees the connection drop
                    return
                if mode == "slow":
                    time.sleep(proxy.slow_seconds)
                if mode == "garbage":
                    return self.answer(200, "<html><body>502 Bad Gateway (nginx)</body></html>")
                if mode == "error":
                    return self.answer(500, {"detail": "injected fault"})
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                try:
                    reply = requests.request(
                        self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=120
                    )
                except requests.RequestException as error:
                    return self.answer(502, {"detail": f"upstream unreachable: {error}"})
                self.send_response(reply.status_code)
                for key in ("Content-Type", "Retry-After"):
                    if key in reply.headers:
                        self.send_header(key, reply.headers[key])
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = forward

        self._server = LoopbackServer(Handler)
        self.url = self._server.url

    def close(self):
        self._server.close()
