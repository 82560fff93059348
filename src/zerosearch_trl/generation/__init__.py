"""Text generation backends shared by the simulator and evaluation.

``OpenAIGenerator`` needs the ``openai`` extra and ``VLLMGenerator`` the ``vllm`` extra (and a GPU); both import
their dependency only when constructed.
"""

from zerosearch_trl.generation.base import Generation, GenerationParams, TextGenerator
from zerosearch_trl.generation.continuous import ContinuousTransformersGenerator
from zerosearch_trl.generation.openai import OpenAIGenerator, OpenAITurns, ServerUnreachableError
from zerosearch_trl.generation.transformers import TransformersGenerator
from zerosearch_trl.generation.vllm import VLLMClientGenerator, VLLMEngineTurns, VLLMGenerator

__all__ = [
    "ContinuousTransformersGenerator",
    "Generation",
    "GenerationParams",
    "OpenAIGenerator",
    "OpenAITurns",
    "ServerUnreachableError",
    "TextGenerator",
    "TransformersGenerator",
    "VLLMClientGenerator",
    "VLLMEngineTurns",
    "VLLMGenerator",
]
