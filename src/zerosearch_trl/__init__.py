"""zerosearch-trl: train LLM search agents with RL on TRL, against a simulated search engine.

Public names are re-exported here flat and imported on first use, so ``import zerosearch_trl`` stays cheap
(the reward functions need neither torch nor transformers).

Example:
    >>> import zerosearch_trl as zs
    >>> zs.f1_reward(["<answer> Paris </answer>"], golden_answers=[["Paris"]])
    [1.0]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

_EXPORTS: dict[str, str] = {
    "Action": "zerosearch_trl.protocol",
    "AdaptiveSchedule": "zerosearch_trl.training.schedules",
    "CachedSearchEngine": "zerosearch_trl.engines",
    "ConstantSchedule": "zerosearch_trl.training.schedules",
    "CurriculumCallback": "zerosearch_trl.training.curriculum",
    "DEFAULT_MODEL_NAME": "zerosearch_trl.models",
    "DemoTask": "zerosearch_trl.demo",
    "Document": "zerosearch_trl.engines",
    "EmbeddedModelMissingError": "zerosearch_trl.models",
    "ExponentialSchedule": "zerosearch_trl.training.schedules",
    "Generation": "zerosearch_trl.generation",
    "GenerationParams": "zerosearch_trl.generation",
    "LinearSchedule": "zerosearch_trl.training.schedules",
    "OpenAIGenerator": "zerosearch_trl.generation",
    "OpenAITurns": "zerosearch_trl.generation",
    "QADataError": "zerosearch_trl.data",
    "SearchCache": "zerosearch_trl.engines",
    "SearchEngine": "zerosearch_trl.engines",
    "SearchRequest": "zerosearch_trl.engines",
    "SimulatedSearchEngine": "zerosearch_trl.engines",
    "SimulatedSearchEnv": "zerosearch_trl.environment",
    "SimulatorStats": "zerosearch_trl.engines",
    "StepSchedule": "zerosearch_trl.training.schedules",
    "THINK_PREFILL": "zerosearch_trl.prompts",
    "ContinuousTransformersGenerator": "zerosearch_trl.generation",
    "TextGenerator": "zerosearch_trl.generation",
    "TransformersGenerator": "zerosearch_trl.generation",
    "VLLMEngineTurns": "zerosearch_trl.generation",
    "VLLMGenerator": "zerosearch_trl.generation",
    "build_policy_prompt": "zerosearch_trl.prompts",
    "cover_em_reward": "zerosearch_trl.rewards",
    "cover_exact_match": "zerosearch_trl.answers",
    "default_model_path": "zerosearch_trl.models",
    "exact_match": "zerosearch_trl.answers",
    "exact_match_reward": "zerosearch_trl.rewards",
    "extract_answer": "zerosearch_trl.rewards",
    "f1_reward": "zerosearch_trl.rewards",
    "f1_score": "zerosearch_trl.answers",
    "format_reward": "zerosearch_trl.rewards",
    "is_well_formed": "zerosearch_trl.protocol",
    "disable_cudnn_attention": "zerosearch_trl.models",
    "load_default_model": "zerosearch_trl.models",
    "load_model": "zerosearch_trl.models",
    "load_qa_dataset": "zerosearch_trl.data",
    "load_tokenizer": "zerosearch_trl.models",
    "make_demo_task": "zerosearch_trl.demo",
    "make_schedule": "zerosearch_trl.training.schedules",
    "normalize_answer": "zerosearch_trl.answers",
    "parse_action": "zerosearch_trl.protocol",
    "render_observation": "zerosearch_trl.protocol",
    "render_policy_prompt": "zerosearch_trl.prompts",
    "simulator_messages": "zerosearch_trl.prompts",
    "make_search_rollout": "zerosearch_trl.rollout",
    "SearchRollout": "zerosearch_trl.rollout",
    "make_warmstart_dataset": "zerosearch_trl.training.warmstart",
    "warm_start": "zerosearch_trl.training.warmstart",
    "well_formed_search_share": "zerosearch_trl.training.probe",
    "MetricsJsonlCallback": "zerosearch_trl.training.logs",
    "write_report": "zerosearch_trl.training.report",
    "TrainingGuardCallback": "zerosearch_trl.training.guards",
    "BM25Engine": "zerosearch_trl.engines",
    "CorpusError": "zerosearch_trl.engines",
    "DenseEngine": "zerosearch_trl.engines",
    "HybridEngine": "zerosearch_trl.engines",
    "RemoteSearchEngine": "zerosearch_trl.engines",
    "RemoteSearchError": "zerosearch_trl.engines",
    "WebSearchEngine": "zerosearch_trl.engines",
    "WebSearchError": "zerosearch_trl.engines",
    "load_passages": "zerosearch_trl.engines",
    "background_server": "zerosearch_trl.engines.server",
    "create_app": "zerosearch_trl.engines.server",
    "EngineSettings": "zerosearch_trl.engines.factory",
    "make_engine": "zerosearch_trl.engines.factory",
    "EvaluationResult": "zerosearch_trl.evaluation",
    "evaluate": "zerosearch_trl.evaluation",
    "write_evaluation": "zerosearch_trl.evaluation",
    "SearchEvalCallback": "zerosearch_trl.training.heldout",
    "collect_simulator_data": "zerosearch_trl.simulator.collect",
    "make_simulator_sft_dataset": "zerosearch_trl.simulator.sft",
    "train_simulator": "zerosearch_trl.simulator.sft",
    "check_simulator": "zerosearch_trl.simulator.check",
    "write_simulator_check": "zerosearch_trl.simulator.check",
    "SearchReinforceConfig": "zerosearch_trl.training.reinforce",
    "SearchReinforceTrainer": "zerosearch_trl.training.reinforce",
    "SearchPPOConfig": "zerosearch_trl.training.ppo_config",
    "SearchPPOTrainer": "zerosearch_trl.training.ppo",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the real imports
    from zerosearch_trl.answers import cover_exact_match, exact_match, f1_score, normalize_answer
    from zerosearch_trl.data import QADataError, load_qa_dataset
    from zerosearch_trl.demo import DemoTask, make_demo_task
    from zerosearch_trl.engines import (
        BM25Engine,
        CachedSearchEngine,
        CorpusError,
        DenseEngine,
        Document,
        HybridEngine,
        RemoteSearchEngine,
        RemoteSearchError,
        SearchCache,
        SearchEngine,
        SearchRequest,
        SimulatedSearchEngine,
        SimulatorStats,
        WebSearchEngine,
        WebSearchError,
        load_passages,
    )
    from zerosearch_trl.engines.factory import EngineSettings, make_engine
    from zerosearch_trl.engines.server import background_server, create_app
    from zerosearch_trl.environment import SimulatedSearchEnv
    from zerosearch_trl.evaluation import EvaluationResult, evaluate, write_evaluation
    from zerosearch_trl.generation import (
        ContinuousTransformersGenerator,
        Generation,
        GenerationParams,
        OpenAIGenerator,
        OpenAITurns,
        TextGenerator,
        TransformersGenerator,
        VLLMEngineTurns,
        VLLMGenerator,
    )
    from zerosearch_trl.models import (
        DEFAULT_MODEL_NAME,
        EmbeddedModelMissingError,
        default_model_path,
        disable_cudnn_attention,
        load_default_model,
        load_model,
        load_tokenizer,
    )
    from zerosearch_trl.prompts import THINK_PREFILL, build_policy_prompt, render_policy_prompt, simulator_messages
    from zerosearch_trl.protocol import Action, is_well_formed, parse_action, render_observation
    from zerosearch_trl.rewards import cover_em_reward, exact_match_reward, extract_answer, f1_reward, format_reward
    from zerosearch_trl.rollout import SearchRollout, make_search_rollout
    from zerosearch_trl.simulator.check import check_simulator, write_simulator_check
    from zerosearch_trl.simulator.collect import collect_simulator_data
    from zerosearch_trl.simulator.sft import make_simulator_sft_dataset, train_simulator
    from zerosearch_trl.training.curriculum import CurriculumCallback
    from zerosearch_trl.training.guards import TrainingGuardCallback
    from zerosearch_trl.training.heldout import SearchEvalCallback
    from zerosearch_trl.training.logs import MetricsJsonlCallback
    from zerosearch_trl.training.ppo import SearchPPOTrainer
    from zerosearch_trl.training.ppo_config import SearchPPOConfig
    from zerosearch_trl.training.probe import well_formed_search_share
    from zerosearch_trl.training.reinforce import SearchReinforceConfig, SearchReinforceTrainer
    from zerosearch_trl.training.report import write_report
    from zerosearch_trl.training.schedules import (
        AdaptiveSchedule,
        ConstantSchedule,
        ExponentialSchedule,
        LinearSchedule,
        StepSchedule,
        make_schedule,
    )
    from zerosearch_trl.training.warmstart import make_warmstart_dataset, warm_start
