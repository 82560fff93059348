"""The multi-turn search rollout: ``GRPOTrainer(..., rollout_func=make_search_rollout(engine))``.

:mod:`~zerosearch_trl.rollout.loop` plays the episodes (training and evaluation share its loop);
:mod:`~zerosearch_trl.rollout.episode` holds one episode's tokens, loss mask and budgets;
:mod:`~zerosearch_trl.rollout.policy` generates a turn with the trainer's own backend (HF, vLLM colocate, vLLM
server); :mod:`~zerosearch_trl.rollout.registry` finds each prompt's question and gold answers.
"""

from zerosearch_trl.rollout.episode import Episode, is_well_formed_episode
from zerosearch_trl.rollout.loop import SearchRollout, make_search_rollout

__all__ = ["Episode", "SearchRollout", "is_well_formed_episode", "make_search_rollout"]
