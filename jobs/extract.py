"""Extract Emotion-LLaMA features (or another preset's: --preset emotion-llama-v2, affectgpt) for a
dataset into a featstore, on Ray.

On a cluster (see cluster.yaml):

    ray get-auth-token --generate         # once: Ray 2.60 clusters require a token
    ray up -y cluster.yaml
    ray dashboard cluster.yaml            # forwards the dashboard to 127.0.0.1:8265
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/extract.py --dataset /data/MERR --format merr --store s3://bucket/merr.zarr \\
        --preset emotion-llama --actors 2 --export-wds s3://bucket/merr-shards

Locally, with no arguments, it makes the demo dataset in demo_out/, runs the four
tiny encoders on an embedded Ray, writes demo_out/store.zarr and demo_out/shards,
and prints a summary. Run it again and it finds nothing pending.

Exit status: 0, unless --strict and a sample failed, or no sample succeeded.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `--working-dir .` ships the repo, not an install

import logging  # noqa: E402

from featstore.errors import FeatstoreError  # noqa: E402
from featstore.extract.config import ExtractConfig, parse_config  # noqa: E402
from featstore.extract.console import quiet_console  # noqa: E402
from featstore.extract.run import run_extract  # noqa: E402
from featstore.extract.summary import summary_lines  # noqa: E402


def main(cfg: ExtractConfig) -> int:
    with quiet_console(cfg.verbose) as console:
        # featstore's own log lines go where Ray's go: the terminal with --verbose, else the log file.
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
        try:
            summary = run_extract(cfg, console)
        except FeatstoreError as e:  # bad dataset, store or checkpoint: say what, no traceback
            console.error(f"extract: {e}")
            return 2
        console.print("\n".join(summary_lines(summary)))
        return verdict(cfg, summary, console.error)


def verdict(cfg: ExtractConfig, summary: dict, say) -> int:
    """Exit status: 1 when nothing was extracted, or with --strict when anything failed."""
    committed = sum(c["committed"] for c in summary["specs"].values())
    failed = sum(c["failed"] for c in summary["specs"].values())
    if committed == 0:
        say("no sample was extracted")
        return 1
    if cfg.strict and (failed or summary["manifest_problems"]):
        say(f"--strict: {failed} failed feature(s), {len(summary['manifest_problems'])} unusable sample(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_config(description=__doc__)))
