"""The ``zerosearch-trl`` subcommands, one module each, with their argument dataclasses and their ``main``.

Nothing outside this package and :mod:`zerosearch_trl.cli` imports it: the library never depends on its command
line (as TRL keeps ``trl/scripts`` apart from its trainers).
"""
