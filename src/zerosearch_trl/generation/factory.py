"""Build a generation backend by name, for CLIs and configs."""

from __future__ import annotations

from zerosearch_trl.generation.base import TextGenerator

BACKENDS = ("transformers", "openai", "vllm")


def make_generator(
    backend: str,
    *,
    model: str | None = "default",
    base_url: str | None = None,
    batch_size: int = 16,
    max_concurrency: int = 8,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> TextGenerator:
    """Create a :class:`~zerosearch_trl.generation.base.TextGenerator`.

    Args:
        backend: ``"transformers"`` (in-process, on this process's GPU when there is one; ``model`` is a hub id,
            folder or ``"default"``), ``"openai"`` (``base_url`` of an OpenAI-compatible server; ``model`` is the
            served name, ``None``/``"default"`` = the server's first) or ``"vllm"`` (in-process ``vllm.LLM``; GPU
            only).
        base_url: the server's API root, for ``"openai"``.
        batch_size: prompts per ``generate`` call, for ``"transformers"``.
        max_concurrency: requests in flight, for ``"openai"``.
        timeout: seconds per request, for ``"openai"`` (``None``: the client's default).
        max_retries: retries per request, for ``"openai"`` (``None``: the client's default).

    Raises:
        ValueError: unknown backend, or a missing ``base_url`` for ``"openai"``; raised before any model loads.

    Example:
        >>> gen = make_generator("openai", base_url="http://localhost:8000/v1")  # doctest: +SKIP
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if backend == "openai":
        if not base_url:
            raise ValueError("The 'openai' backend needs base_url, e.g. --base_url http://localhost:8000/v1.")
        from zerosearch_trl.generation.openai import OpenAIGenerator

        options = {
            key: value for key, value in (("timeout", timeout), ("max_retries", max_retries)) if value is not None
        }
        return OpenAIGenerator(
            base_url, model=None if model in (None, "default") else model, max_concurrency=max_concurrency, **options
        )
    if backend == "vllm":
        from zerosearch_trl.generation.vllm import VLLMGenerator
        from zerosearch_trl.models import default_model_path

        return VLLMGenerator(str(default_model_path()) if model in (None, "default") else model)
    from zerosearch_trl.generation.transformers import TransformersGenerator
    from zerosearch_trl.models import inference_device, load_model, outside_zero3_init

    with outside_zero3_init():  # a generator is frozen and whole on its device, whatever the policy trains under
        loaded, tokenizer = load_model(model, device_map=inference_device())
    return TransformersGenerator(loaded, tokenizer, batch_size=batch_size)
