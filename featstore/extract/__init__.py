"""The extraction job on Ray Data: the only package of featstore that imports ray.

``config`` (the job's options), ``plan`` (pending work units), ``decode`` (CPU
tasks, no transformers), ``encode`` (one actor pool per encoder), ``sink``
(exactly-once unit commits) and ``run`` (the body of ``jobs/extract.py``).
Import the module you need; this package imports nothing itself, so that a
decode task does not load the encoders.
"""
