"""Train Emotion-LLaMA's projectors and LoRA LLaMA from a featstore cache.

Locally, with no arguments, it trains the tiny LLaMA on the demo store for a few
steps (configs/demo.yaml); make the store first with ``python jobs/extract.py``.

    python jobs/train.py                                   # the demo
    python jobs/train.py --config configs/stage1_coarse.yaml --shards /data/merr-coarse-shards
    python jobs/train.py --config configs/demo.yaml --max-steps 8 --resume never
    python jobs/train.py --config configs/demo.yaml --online          # encoders on the demo clips each step
    python jobs/train.py --config configs/demo.yaml --cache zarr --num-workers 2   # Ray Train, 2 CPU workers

On a Ray cluster (see cluster.yaml), 8 GPU workers:

    ray job submit --working-dir . -- \\
        python jobs/train.py --config configs/stage1_coarse.yaml --num-workers 8 --use-gpu

Exit status: 0 on success, 2 when the cache or a checkpoint is missing or does not fit the config.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `--working-dir .` ships the repo, not an install

from trainer.train.config import parse_config  # noqa: E402
from trainer.train.launch import main as train  # noqa: E402

DEMO_CONFIG = ROOT / "configs" / "demo.yaml"  # what runs with no arguments


def main(argv: list[str]) -> int:
    import warnings

    import transformers

    transformers.utils.logging.disable_progress_bar()  # the training bar is the one progress bar
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not the user's
    cfg = parse_config(argv or ["--config", str(DEMO_CONFIG)], description=__doc__)
    url = cfg.store if cfg.online else cfg.source()  # the online path reads clips listed in the store
    if "://" not in url and not Path(url).exists():
        hint = " Make the demo store with: python jobs/extract.py" if "demo_out" in url else ""
        print(f"train: no feature cache at {url}.{hint}", file=sys.stderr)
        return 2
    try:
        summary = train(cfg)
    except (ValueError, FileNotFoundError) as e:  # a stale cache or a bad checkpoint: say what, no traceback
        print(f"train: {e}", file=sys.stderr)
        return 2
    print(f"trained {summary['steps']} steps (epoch {summary['epoch']}), last loss {summary['loss']:.4f}")
    print(f"checkpoint: {summary['checkpoint']}")
    print(
        f"logs: {summary['tensorboard']} (tensorboard --logdir {summary['tensorboard']}), losses: {summary['losses']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
