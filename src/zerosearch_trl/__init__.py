"""zerosearch-trl: train LLM search agents with RL on TRL, against a simulated search engine.

Example:
    >>> import zerosearch_trl as zs
    >>> zs.f1_reward(["<answer> Paris </answer>"], golden_answers=[["Paris"]])
    [1.0]
"""

__version__ = "0.1.0.dev0"

from zerosearch_trl.data import QADataError, load_qa_dataset
from zerosearch_trl.demo import DemoTask, make_demo_task
from zerosearch_trl.engines import (
    CachedSearchEngine,
    Document,
    SearchCache,
    SearchEngine,
    SearchRequest,
    SimulatedSearchEngine,
    SimulatorStats,
)
from zerosearch_trl.generation import (
    Generation,
    GenerationParams,
    OpenAIGenerator,
    TextGenerator,
    TransformersGenerator,
    VLLMGenerator,
)
from zerosearch_trl.models import (
    DEFAULT_MODEL_NAME,
    EmbeddedModelMissingError,
    default_model_path,
    load_default_model,
    load_model,
    load_tokenizer,
)
from zerosearch_trl.prompts import THINK_PREFILL, build_policy_prompt, render_policy_prompt
from zerosearch_trl.protocol import Action, is_well_formed, parse_action, render_observation
from zerosearch_trl.rewards import (
    cover_em_reward,
    cover_exact_match,
    exact_match,
    exact_match_reward,
    extract_answer,
    f1_reward,
    f1_score,
    format_reward,
    normalize_answer,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "THINK_PREFILL",
    "Action",
    "CachedSearchEngine",
    "Document",
    "SearchCache",
    "SearchEngine",
    "SearchRequest",
    "SimulatedSearchEngine",
    "SimulatorStats",
    "OpenAIGenerator",
    "VLLMGenerator",
    "DemoTask",
    "EmbeddedModelMissingError",
    "Generation",
    "GenerationParams",
    "QADataError",
    "TextGenerator",
    "TransformersGenerator",
    "__version__",
    "build_policy_prompt",
    "cover_em_reward",
    "cover_exact_match",
    "default_model_path",
    "exact_match",
    "exact_match_reward",
    "extract_answer",
    "f1_reward",
    "f1_score",
    "format_reward",
    "is_well_formed",
    "load_default_model",
    "load_model",
    "load_qa_dataset",
    "load_tokenizer",
    "make_demo_task",
    "normalize_answer",
    "parse_action",
    "render_observation",
    "render_policy_prompt",
]
