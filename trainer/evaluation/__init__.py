"""Answers and scores: label sets and the original's answer parsing (``labels``), metrics in
numpy, the EMER judge client, a saved checkpoint rebuilt to answer (``inference``),
evaluation of a cache (``evaluate``), prediction on one raw clip (``predict``).

May import ``trainer.model``, ``trainer.data`` and, to rebuild a saved model,
``trainer.train.checkpoint`` and ``trainer.train.config``; never ``trainer.train.recipe``
(tests/trainer/test_imports.py checks it).
"""

__all__: list[str] = []
