"""Answer on one raw clip: decode it, run the four frozen encoders live (the same classes, preprocessing and
spec ids as extraction; no feature is ever zeros), prompt the trained model as in training, and print the
emotion label and the reasoning.

With no arguments it uses the demo checkpoint (python jobs/train.py) on a demo clip (python jobs/extract.py).

    python jobs/predict.py                                        # the demo
    python jobs/predict.py clip.mp4 --checkpoint runs/stage2 --transcript "I can't believe it!"
    python jobs/predict.py clip.mp4 --checkpoint runs/stage2 --json

A checkpoint trained on features of other spec ids than the encoders loaded here is refused, naming both.

Exit status: 0 on success, 2 when the clip or checkpoint is missing, or they do not fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `--working-dir .` ships the repo, not an install

from trainer.evaluation.predict import PredictConfig, predict  # noqa: E402
from trainer.train.config import parse_dataclass  # noqa: E402


def main(argv: list[str]) -> int:
    import json
    import warnings

    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # unused encoder-decoder weights are expected
    warnings.filterwarnings("ignore", category=FutureWarning)
    cfg = parse_dataclass(PredictConfig, argv, description=__doc__)
    try:
        out = predict(cfg)
    except (ValueError, FileNotFoundError) as e:  # no checkpoint, wrong spec ids, bad clip: say what
        print(f"predict: {e}", file=sys.stderr)
        return 2
    if cfg.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    note = "" if out["known"] else " (the answer's last word is not a label: counted as neutral)"
    print(f"clip: {out['clip']}")
    print(f"checkpoint: {out['checkpoint']} (encoders: {out['encoders']})")
    print(f"label: {out['label']}{note}")
    print(f"answer: {out['answer']}")
    print(f"reasoning: {out['reasoning']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
