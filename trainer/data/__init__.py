"""From the feature cache to batches: the instruction tasks, the cache opened with its spec
ids checked and expanded to examples (``cache``), the DataLoader workers and prefetch
(``loader``), and the online path that runs the four encoders on raw clips instead
(``live``, ``online``).

May import ``trainer.model`` (the prompt's layout, the feature slots) and featstore's
readers, encoders and decoding; never ``trainer.train`` or ``trainer.evaluation``.
"""

__all__: list[str] = []
