"""Evaluate a trained checkpoint on a feature cache: MER2023 accuracy and weighted F1, DFEW UAR/WAR,
MERR accuracy, and with --emer the EMER clue/label overlap scored by a judge model.

Locally, with no arguments, it evaluates the demo checkpoint (python jobs/train.py) on the demo store
(python jobs/extract.py) and writes demo_out/eval/.

    python jobs/evaluate.py                                               # the demo
    python jobs/evaluate.py --checkpoint runs/stage1 --store /data/mer2023.zarr --split test --labels mer2023
    python jobs/evaluate.py --checkpoint runs/stage1 --cache shards --shards /data/dfew-shards --labels dfew \\
        --unknown invalid
    EMER_JUDGE_URL=https://api.openai.com/v1/chat/completions EMER_JUDGE_API_KEY=... \\
        python jobs/evaluate.py --checkpoint runs/stage2 --store /data/emer.zarr --emer

On a Ray cluster (one GPU):

    ray job submit --working-dir . --entrypoint-num-gpus 1 -- \\
        python jobs/evaluate.py --checkpoint /shared/runs/stage1 --store s3://bucket/mer2023.zarr --labels mer2023

Exit status: 0 on success, 2 when the checkpoint or cache is missing or does not fit, or the judge fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `--working-dir .` ships the repo, not an install

from trainer.evaluation.evaluate import EvalConfig, evaluate  # noqa: E402
from trainer.train.config import parse_dataclass  # noqa: E402


def main(argv: list[str]) -> int:
    import logging
    import warnings

    import transformers

    transformers.utils.logging.disable_progress_bar()  # the evaluation bar is the one progress bar
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    cfg = parse_dataclass(EvalConfig, argv, description=__doc__)
    source = cfg.store if cfg.cache == "zarr" else cfg.shards
    if "://" not in source and not Path(source).exists():
        hint = " Make the demo store with: python jobs/extract.py" if "demo_out" in source else ""
        print(f"evaluate: no feature cache at {source}.{hint}", file=sys.stderr)
        return 2
    from trainer.data.cache import CacheError
    from trainer.evaluation.judge import JudgeError

    try:
        m = evaluate(cfg)
    except (CacheError, ValueError, FileNotFoundError, JudgeError) as e:  # say what, no traceback
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    print(f"checkpoint: {m['checkpoint']}")
    print(
        f"{m['label_set']}: {m['n']} samples, accuracy {m['accuracy']:.4f}, weighted F1 {m['weighted_f1']:.4f}, "
        f"UAR {m['uar']:.4f}, WAR {m['war']:.4f}"
    )
    what = "counted as their own class 'invalid'" if cfg.unknown == "invalid" else "counted as neutral"
    print(f"answers whose last word is not a label: {m['unknown_answers']} of {m['n']} ({what})")
    if "emer" in m:
        print(
            f"EMER: clue overlap {m['emer']['clue_overlap']:.2f}, label overlap {m['emer']['label_overlap']:.2f} "
            f"(1-10, {m['emer']['n']} answers)"
        )
    print(f"metrics: {m['metrics_file']}")
    print(f"confusion matrix: {m['confusion_png']} ({m['confusion_json']})")
    print(f"predictions: {m['predictions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
