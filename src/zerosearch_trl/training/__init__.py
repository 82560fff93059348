"""Everything around TRL's trainer: the noise curriculum and its schedules, the guards, the warm start and the
probe, REINFORCE and PPO, the run's logs and report, the held-out callback, checkpoints, and the main job
(:mod:`~zerosearch_trl.training.config`, :mod:`~zerosearch_trl.training.job`, :mod:`~zerosearch_trl.training.summary`).
"""
