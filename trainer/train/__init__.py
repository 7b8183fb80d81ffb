"""The training recipe: its config (``TrainConfig``, and the dataclass-to-flags helper
the other jobs use), AdamW groups and schedules (``optim``), checkpoints, the loop itself
(``recipe``: the whole loop in one file), Ray Train (``distributed``, which runs the
recipe on each worker), ``launch`` (this process or Ray), and the importer of the
original ``.pth`` files (``import_original``).

May import ``trainer.model`` and ``trainer.data``; Ray only inside ``distributed``.
"""

__all__: list[str] = []
