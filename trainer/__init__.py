"""trainer: Emotion-LLaMA's projectors and LoRA LLaMA, trained from the featstore cache.

Modules: ``projector`` (features -> 260 tokens), ``prompt`` (token layout and the
one embedding function), ``model`` (frozen LLaMA + LoRA + projectors),
``tasks`` and ``data`` (cache -> batches), ``config``, ``optim`` (AdamW groups,
schedules), ``recipe`` (the training loop), ``checkpoint``, ``distributed``
(Ray Train), ``online`` (encoders on raw clips), ``describe`` (model sizes on
the meta device), ``tiny`` (offline tiny LLaMA), ``featstore_bridge`` (the one
place for featstore names beyond its package root); evaluation and prediction:
``labels`` (label sets, answer parsing), ``metrics`` (numpy), ``confusion_png``,
``judge`` (EMER judge client), ``inference`` (checkpoint -> answers), ``evaluate``,
``live`` (encoders on raw clips, as extraction set them up), ``predict``,
``cli_args`` (dataclass -> argparse).
The package root imports nothing heavy; import the module you need.
"""

__all__: list[str] = []
