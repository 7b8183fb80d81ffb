"""The training recipe: projectors + LoRA LLaMA from the feature cache. The loop is all in this file.

``TrainRecipe(cfg).setup()`` builds tokenizer, model, optimizer, schedule and the
data stream (and restores a checkpoint); ``train()`` runs optimizer steps until
the epochs or ``max_steps`` are done, checkpointing on the way; ``main(cfg)``
does both, in this process or under Ray Train (``cfg.num_workers``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from trainer.data.cache import Collator, EpochStream, dist_info, open_cache
from trainer.data.loader import Prefetcher, pin_batch, to_device
from trainer.data.tasks import parse_tasks
from trainer.model.emotion_llama import LoraSettings, build_model
from trainer.model.layout import get_layout
from trainer.train import checkpoint as ckpt
from trainer.train.config import TrainConfig

__all__ = ["STEP_SLEEP_ENV", "TrainRecipe", "resolve_init", "resolve_resume"]

log = logging.getLogger(__name__)
# Seconds to sleep after each optimizer step: lets a kill test land between two checkpoints.
STEP_SLEEP_ENV = "TRAINER_STEP_SLEEP"
_MODEL_KEYS = ("input_ids", "feature_mask", "attention_mask", "labels")
# --init-from a file with one of these suffixes is an original (MiniGPT-v2 runner) checkpoint.
ORIGINAL_SUFFIXES = (".pth", ".pt")


def resolve_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint ``cfg.resume`` points at: newest in out_dir (auto), none (never), or a folder."""
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        return ckpt.latest_checkpoint(Path(cfg.out_dir) / "checkpoints")
    ckpt.read_state(cfg.resume)  # refuses an incomplete folder, naming it
    return Path(cfg.resume)


def resolve_init(path: str | Path) -> Path:
    """A checkpoint folder, or the newest checkpoint under a run folder (``--init-from runs/stage1_coarse``).

    Raises:
        FileNotFoundError: naming ``path`` when it holds no complete checkpoint.
    """
    if (Path(path) / ckpt.STATE_FILE).is_file():
        return Path(path)
    found = ckpt.latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"--init-from {path}: no complete checkpoint there")
    return found


def _check_ids(expected: dict[str, str], found: dict[str, str], what: str) -> None:
    bad = {s: (expected[s], found.get(s)) for s in expected if found.get(s) != expected[s]}
    if bad:
        raise ValueError(f"{what} was trained on spec ids {expected}, the config/cache has {found} (differing: {bad})")


class TrainRecipe:
    """One training run.

    Args:
        cfg: the resolved config.
        device: where to train (default: from ``cfg.device``).
        publish: called as ``publish(folder, metrics)`` after each checkpoint is written
            (Ray Train reports it); None for a plain local run.
        checkpoint_root: where checkpoint folders go (default ``out_dir/checkpoints``).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device | None = None,
        publish: Callable[[Path, dict], None] | None = None,
        checkpoint_root: str | Path | None = None,
    ):
        self.cfg = cfg
        want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = device or torch.device(want)
        self.publish = publish
        self.checkpoint_root = Path(checkpoint_root or Path(cfg.out_dir) / "checkpoints")
        self.step = self.epoch = self.batches_in_epoch = self.samples_in_epoch = 0
        self.last_checkpoint: Path | None = None
        self.checkpointed_step = -1
        self.last_loss = float("nan")

    # ---- setup -----------------------------------------------------------------------------
    def setup(self, resume_from: str | Path | None = None) -> None:
        """Build everything; with ``resume_from`` (a checkpoint folder), continue from it."""
        cfg = self.cfg
        self.rank, self.world = dist_info()
        state = ckpt.read_state(resume_from) if resume_from else None
        expect = dict(cfg.expect)
        if state:
            expect = expect or state["spec_ids"]
            _check_ids(state["spec_ids"], expect, f"checkpoint {resume_from}")
        torch.manual_seed(cfg.seed + self.rank)  # projector init (same on every rank: rank 0's is broadcast)
        random.seed(cfg.seed + self.rank)
        np.random.seed(cfg.seed + self.rank)
        llm_path = self._llm_path()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(llm_path)
        self.dataset, self.info = self._open_data(expect)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
            cfg.llm_dtype, torch.bfloat16 if self.device.type == "cuda" else torch.float32
        )
        lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_list())
        self.model = build_model(llm_path, self.info.shapes, lora, dtype, get_layout(cfg.layout)).to(self.device)
        self.init_report: dict[str, Any] | None = None
        if cfg.init_from and not state and Path(cfg.init_from).suffix in ORIGINAL_SUFFIXES:
            self.init_report = self._init_from_original(cfg.init_from)
        elif cfg.init_from and not state:
            init = resolve_init(cfg.init_from)
            _check_ids(ckpt.read_state(init)["spec_ids"], self.info.spec_ids, f"--init-from {init}")
            ckpt.load_weights(init, self.model)
        self.tasks = parse_tasks(cfg.tasks)
        if cfg.grad_checkpointing:
            self.model.gradient_checkpointing()
        collate = Collator(self.tokenizer, self.model.num_video_tokens, self.model.num_feature_tokens, cfg.max_txt_len)
        shuffle = cfg.shuffle_buffer > 0
        self.stream = EpochStream(
            self.dataset, self.tasks, collate, cfg.batch_size, cfg.seed, shuffle, cfg.loader_workers, self.model.slots
        )
        self.optimizer, self.scheduler = self._optim()
        if state:
            same_world = state["world_size"] == self.world
            ckpt.load_training_state(resume_from, self.model, self.optimizer, self.scheduler, self.rank, rng=same_world)
            self.step, self.epoch = state["step"], state["data"]["epoch"]
            self.last_checkpoint, self.checkpointed_step = Path(resume_from), self.step
            self.last_loss = float(state.get("loss", float("nan")))
            if same_world:  # the data position counts this split's batches
                self._check_loader_workers(state, resume_from)
                self.batches_in_epoch = state["data"]["batches_in_epoch"]
                self.samples_in_epoch = state["data"]["samples_in_epoch"]
            else:
                log.warning(
                    "resuming a %d-worker checkpoint on %d workers: epoch %d starts over, RNGs reseeded",
                    state["world_size"],
                    self.world,
                    self.epoch,
                )
        self.ddp = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._open_logs()

    def _check_loader_workers(self, state: dict[str, Any], folder: str | Path) -> None:
        """Shards are split between loader workers by file: a mid-epoch position holds for one number."""
        cfg, data = self.cfg, state["data"]
        was = int(data.get("loader_workers", 0))
        if cfg.cache == "shards" and not cfg.online and data["batches_in_epoch"] and was != cfg.loader_workers:
            raise ValueError(
                f"checkpoint {folder} stopped mid-epoch reading shards with --loader-workers {was}; the order "
                f"of shard samples depends on that number, so resume with --loader-workers {was} "
                f"(not {cfg.loader_workers}) or from a checkpoint at an epoch's end"
            )

    def _init_from_original(self, path: str) -> dict[str, Any]:
        """Start from an original ``.pth`` (Emotion-LLaMA's, or MiniGPT-v2's base with its feature
        projectors left at initialisation, which is logged)."""
        from trainer.model.original import FEATURE_PROJECTORS, load_original_into

        report = load_original_into(self.model, path, allow_missing=FEATURE_PROJECTORS)
        if report.left_at_init:
            log.warning(
                "--init-from %s: %s not in the file, left at their initialisation (seed %d)",
                path,
                ", ".join(report.left_at_init),
                self.cfg.seed,
            )
        return report.to_dict()

    def _llm_path(self) -> str:
        if self.cfg.llm != "tiny":
            return self.cfg.llm
        from trainer.model.tiny import build_tiny_llm

        return str(build_tiny_llm(self.cfg.tiny_dir))

    def _open_data(self, expect: dict[str, str]):
        cfg = self.cfg
        if cfg.online:
            from trainer.data.online import open_online

            return open_online(cfg, expect)
        slots = get_layout(cfg.layout).slots
        return open_cache(cfg.cache, cfg.source(), expect, cfg.shuffle_buffer, cfg.seed, cfg.split, slots)

    def _optim(self):
        cfg = self.cfg
        from trainer.train.optim import build_optimizer, build_scheduler

        per_rank = math.ceil(self.info.num_samples / self.world) * len(self.tasks)
        self.steps_per_epoch = math.ceil(math.ceil(per_rank / cfg.batch_size) / cfg.grad_accum)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        opt = build_optimizer(self.model.named_parameters(), cfg.lr, cfg.weight_decay)
        sched = build_scheduler(
            opt, cfg.schedule, cfg.lr, cfg.warmup_lr, cfg.min_lr, cfg.warmup_steps, self.total_steps
        )
        return opt, sched

    def _open_logs(self) -> None:
        self.writer = self.losses = None
        out = Path(self.cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.rank != 0:
            return
        self.losses = open(out / "losses.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
            return
        self.writer = SummaryWriter(str(out / "tb"))

    # ---- the loop --------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run until ``total_steps``; checkpoint every ``checkpoint_every`` steps and at the end."""
        cfg = self.cfg
        from tqdm import tqdm

        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not cfg.progress or self.rank != 0,
        )
        sleep = float(os.environ.get(STEP_SLEEP_ENV, "0") or 0)
        while self.step < self.total_steps and self.epoch < cfg.epochs:
            stream = self._batches()
            try:
                self._epoch(stream, bar, sleep)
            finally:
                if isinstance(stream, Prefetcher):
                    stream.close()
        bar.close()
        if self.checkpointed_step != self.step:
            self.save_checkpoint()
        self._close_logs()
        return {
            "steps": self.step,
            "epoch": self.epoch,
            "loss": self.last_loss,
            "checkpoint": str(self.last_checkpoint),
            "out_dir": str(Path(cfg.out_dir)),
            "tensorboard": str(Path(cfg.out_dir) / "tb"),
            "losses": str(Path(cfg.out_dir) / "losses.jsonl"),
        }

    def _batches(self):
        """This epoch's batches from the data position on; read and collated ahead in a thread
        (``--prefetch``), pinned for a CUDA step."""
        stream = self.stream.batches(self.epoch, self.batches_in_epoch)
        if not self.cfg.prefetch:
            return stream
        pin = self.device.type == "cuda"
        return Prefetcher(stream, self.cfg.prefetch, (lambda fb: (fb[0], pin_batch(fb[1]))) if pin else None)

    def _epoch(self, stream, bar, sleep: float) -> None:
        """Optimizer steps until the epoch's data is used up on every rank (or the last step)."""
        cfg = self.cfg
        while self.step < self.total_steps:
            micro = self._micro_batches(stream)
            if not micro:  # this epoch's data is used up on every rank
                self.epoch, self.batches_in_epoch, self.samples_in_epoch = self.epoch + 1, 0, 0
                break
            t0 = time.perf_counter()
            loss, lr = self._optimizer_step(micro)
            samples = sum(len(b["sample_ids"]) for b in micro) * self.world
            self.step += 1
            self.batches_in_epoch += len(micro)
            self.samples_in_epoch += sum(len(b["sample_ids"]) for b in micro)
            self.last_loss = loss
            self._log(loss, lr, samples / (time.perf_counter() - t0), micro)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples / (time.perf_counter() - t0):.1f}")
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
            if sleep:
                time.sleep(sleep)

    def _micro_batches(self, stream) -> list[dict[str, Any]]:
        """Up to ``grad_accum`` batches; fewer at the end of the epoch, none once every rank is through it."""
        out = []
        for _ in range(self.cfg.grad_accum):
            fresh, batch = next(stream)
            if not self._any_rank(fresh):
                break
            out.append(batch)
        return out

    def _any_rank(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def _optimizer_step(self, micro: list[dict[str, Any]]) -> tuple[float, float]:
        cfg = self.cfg
        self.ddp.train()
        amp = cfg.bf16 and self.device.type == "cuda"
        total = 0.0
        for batch in micro:
            inputs = to_device(batch, _MODEL_KEYS, self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                loss = self.ddp(inputs).loss
            (loss / len(micro)).backward()
            total += loss.item()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean = torch.tensor([total / len(micro)], dtype=torch.float64)
        if self.world > 1:
            mean = mean.to(self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(mean)
            mean /= self.world
        return float(mean.item()), lr

    def _log(self, loss: float, lr: float, samples_per_s: float, micro: list[dict[str, Any]]) -> None:
        if self.cfg.log_samples:  # every rank: which samples it trained on, for coverage audits
            path = Path(self.cfg.out_dir) / f"samples-rank{self.rank}.jsonl"
            with open(path, "a", encoding="utf-8") as f:
                ids = [s for b in micro for s in b["sample_ids"]]
                f.write(json.dumps({"step": self.step, "epoch": self.epoch, "sample_ids": ids}) + "\n")
        if self.losses is not None:
            self.losses.write(json.dumps({"step": self.step, "epoch": self.epoch, "loss": loss, "lr": lr}) + "\n")
            self.losses.flush()
        if self.writer is not None and self.step % self.cfg.log_every == 0:
            self.writer.add_scalar("train/loss", loss, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)
            self.writer.add_scalar("train/samples_per_s", samples_per_s, self.step)

    def _close_logs(self) -> None:
        if self.losses is not None:
            self.losses.close()
        if self.writer is not None:
            self.writer.close()

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step (rank 0 everything, other ranks their RNG); publish it."""
        state = {
            "step": self.step,
            "loss": self.last_loss,
            "world_size": self.world,
            "spec_ids": self.info.spec_ids,
            "data": {
                "epoch": self.epoch,
                "batches_in_epoch": self.batches_in_epoch,
                "samples_in_epoch": self.samples_in_epoch,
                "loader_workers": self.cfg.loader_workers,
                "source": self.info.source,
            },
            "config": self.cfg.to_dict(),
        }
        folder = self.checkpoint_root / ckpt.checkpoint_name(self.step)
        if self.rank == 0:
            ckpt.save_checkpoint(folder, self.model, self.optimizer, self.scheduler, state, self.rank)
            if self.publish is None:
                ckpt.prune_checkpoints(self.checkpoint_root, self.cfg.keep_checkpoints)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            ckpt.save_rng(folder, self.rank)
        self.last_checkpoint, self.checkpointed_step = folder, self.step
        if self.publish is not None:
            self.publish(folder, {"step": self.step, "epoch": self.epoch, "loss": self.last_loss})
        return folder
