"""The ``search/*`` metrics of a rollout: per optimisation step, over every process's episodes.

Each process sums its own episodes' counts; the sums are added up across processes before any ratio is taken, so
every process logs the same global values (as TRL's own metrics are gathered before they are logged), and the
counters of the engine (failures, simulator retries and fallbacks, cache hits) are this step's, not running totals.
"""

from __future__ import annotations

from typing import Any

from zerosearch_trl.rollout.episode import Episode
from zerosearch_trl.rollout.scheduler import SearchQueue


def engine_counters(engine: Any) -> dict[str, float]:
    """The engine's running counters (a simulator's stats, a cache's hits and misses), to take differences of.

    Example:
        >>> from types import SimpleNamespace
        >>> engine_counters(SimpleNamespace(cache=SimpleNamespace(hits=3, misses=1)))
        {'cache_hits': 3, 'cache_misses': 1}
    """
    counters: dict[str, float] = {}
    stats = getattr(engine, "stats", None)
    if stats is not None and hasattr(stats, "as_dict"):
        counters.update(stats.as_dict())
    cache = getattr(engine, "cache", None)
    if cache is not None:
        counters.update(cache_hits=cache.hits, cache_misses=cache.misses)
    return counters


def log_search_metrics(
    trainer: Any,
    episodes: list[Episode],
    well_formed: list[bool],
    before: dict[str, float],
    after: dict[str, float],
    searches: SearchQueue,
) -> None:
    """Append this step's ``search/*`` metrics to the trainer's own (so they reach ``report_to``); ``searches``
    is the rollout's search queue (its fallbacks, engine calls and requests).

    Every process must call it at every step: the sums are reduced across processes.
    """
    metrics = getattr(trainer, "_metrics", None)
    if metrics is None:
        return
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    sums = _sum_across_processes(
        trainer,
        {
            "episodes": len(episodes),
            "searches": sum(len(e.search_queries) for e in episodes),
            "with_search": sum(bool(e.search_queries) for e in episodes),
            "well_formed": sum(well_formed),
            "invalid_actions": sum(e.invalid_actions for e in episodes),
            "noisy_searches": sum(e.noisy_searches for e in episodes),
            "observation_tokens": sum(e.observation_tokens for e in episodes),
            "observations_cut": sum(e.observations_cut for e in episodes),
            "engine_failures": searches.failures,
            "engine_calls": searches.calls,
            "engine_requests": searches.requests,
            "retries": delta.get("retries", 0.0),
            "fallbacks": delta.get("fallbacks", 0.0),
            "cache_hits": delta.get("cache_hits", 0.0),
            "cache_lookups": delta.get("cache_hits", 0.0) + delta.get("cache_misses", 0.0),
        },
    )
    n, searches = max(sums["episodes"], 1.0), sums["searches"]
    values = {
        "search/searches_per_episode": searches / n,
        "search/episodes_with_search": sums["with_search"] / n,
        "search/well_formed_episodes": sums["well_formed"] / n,
        "search/invalid_actions_per_episode": sums["invalid_actions"] / n,
        "search/noisy_fraction": sums["noisy_searches"] / searches if searches else 0.0,
        "search/observation_tokens_per_episode": sums["observation_tokens"] / n,
        "search/observations_cut_per_episode": sums["observations_cut"] / n,
        "search/engine_failures": sums["engine_failures"],
        # A simulator is fastest on batches: the scheduler sends what gathered while one batch was at the engine.
        "search/requests_per_engine_call": sums["engine_requests"] / max(sums["engine_calls"], 1.0),
    }
    if "retries" in after:  # an engine with a simulator
        values["search/simulator_retries"] = sums["retries"]
        values["search/simulator_fallbacks"] = sums["fallbacks"]
    if sums["cache_lookups"]:
        values["search/cache_hit_rate"] = sums["cache_hits"] / sums["cache_lookups"]
    mode = "train" if trainer.model.training else "eval"
    for key, value in values.items():
        metrics[mode][key].append(float(value))


def _sum_across_processes(trainer: Any, counts: dict[str, float]) -> dict[str, float]:
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is None or accelerator.num_processes == 1:
        return {key: float(value) for key, value in counts.items()}
    import torch

    local = torch.tensor([float(v) for v in counts.values()], dtype=torch.float64, device=accelerator.device)
    return dict(zip(counts, accelerator.reduce(local, reduction="sum").tolist()))
