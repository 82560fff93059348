"""Make and check a simulator (the paper's first stage): collect pairs from a real engine, fine-tune, score.

:mod:`~zerosearch_trl.simulator.collect` -> :mod:`~zerosearch_trl.simulator.sft` ->
:mod:`~zerosearch_trl.simulator.check`. The engine that serves a simulator in training is
:class:`~zerosearch_trl.engines.simulated.SimulatedSearchEngine`.
"""
