"""trainer: Emotion-LLaMA's projectors and LoRA LLaMA, trained from the featstore cache.

Four packages, each importing only those above it in this list:

- ``trainer.model``: the network. Projectors (features -> 260 tokens), the prompt
  and its one embedding function, the frozen LLaMA with LoRA, the tiny offline
  LLaMA, the original checkpoint's layout, sizes and memory on the meta device.
- ``trainer.data``: from the cache (shards or Zarr) to batches: tasks, the
  collator and epoch stream, the loader's worker processes and prefetch, and the
  encoders run live on raw clips (the online path).
- ``trainer.train``: the recipe. Its config, optimizer and schedules,
  checkpoints, the training loop (``recipe``: all of it in that file), Ray Train
  (``distributed``, which depends on the recipe, never the reverse), ``launch``
  (this process or Ray workers), and the original ``.pth`` importer.
- ``trainer.evaluation``: answers and scores. Labels and answer parsing,
  metrics, the EMER judge, a checkpoint rebuilt to answer, evaluation of a cache,
  prediction on a raw clip. It reads checkpoints (``train.checkpoint``,
  ``train.config``) but never imports the recipe.

The package root imports nothing heavy (no torch, no Ray); import the module you need.
"""

__all__: list[str] = []
