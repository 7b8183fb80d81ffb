"""Memory: --grad-checkpointing gives the same losses (1e-5) at a lower peak (measured: the peak RSS of a
process training a mid-size LLaMA on the CPU), and describe --memory's estimate counts what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.model.memory import estimate_memory, saved_bytes

REPO = Path(__file__).resolve().parents[3]

# One process, one training run of 3 steps; prints the losses and the peak RSS the steps added.
_RUN = r"""
import json, sys, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trainer.data.cache import Collator, Example
from trainer.model.emotion_llama import LoraSettings, build_model
from trainer.train.optim import build_optimizer

def rss_peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])

folder, tiny, ck = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
torch.manual_seed(0)
shapes = {"global": (1025, 64), "local": (64,), "temporal": (64,), "audio": (64,)}
model = build_model(folder, shapes, LoraSettings(r=8, dropout=0.1))
if ck:
    model.gradient_checkpointing()
tok = AutoTokenizer.from_pretrained(tiny)
coll = Collator(tok, model.num_video_tokens, model.num_feature_tokens)
g = torch.Generator().manual_seed(1)
feats = [{s: torch.randn(*shape, generator=g).numpy() for s, shape in shapes.items()} for _ in range(8)]
batch = coll([Example(f"s{i}", feats[i], "words " * 40, "emotion", "Which emotion?", "worried " * 20)
              for i in range(8)])
opt = build_optimizer(model.named_parameters(), 1e-3, 0.0)
model.train()
base = rss_peak_kb()
losses = []
for _ in range(3):
    loss = model(batch).loss
    loss.backward()
    opt.step(); opt.zero_grad(set_to_none=True)
    losses.append(loss.item())
print(json.dumps({"losses": losses, "peak_mb": (rss_peak_kb() - base) / 1024}))
"""


@pytest.fixture(scope="module")
def mid_llama(tmp_path_factory, tiny_llm):
    """A LLaMA wide and deep enough that its activations dominate a step's memory (hidden 256, 8 layers)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mid-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _train(folder, tiny, checkpointing: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _RUN, str(folder), str(tiny), "1" if checkpointing else "0"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_grad_checkpointing_same_losses_lower_peak(mid_llama, tiny_llm):
    plain = _train(mid_llama, tiny_llm, False)
    ck = _train(mid_llama, tiny_llm, True)
    assert plain["losses"] == pytest.approx(ck["losses"], abs=1e-5)  # dropout on: the RNG is replayed
    assert plain["losses"][0] != plain["losses"][2]  # the steps trained
    assert ck["peak_mb"] < 0.6 * plain["peak_mb"], (plain, ck)


def test_saved_bytes_counts_what_autograd_keeps():
    lin = torch.nn.Linear(8, 16)
    x = torch.randn(4, 8)
    # linear keeps its input x (4x8 fp32) for the weight's gradient, relu its output (4x16); the
    # weight is a parameter and not counted
    assert saved_bytes(lambda: lin(x).relu().sum(), lin.parameters()) == 4 * 8 * 4 + 4 * 16 * 4
    xg = torch.randn(4, 8, requires_grad=True)  # now the weight is kept too, for x's gradient
    assert saved_bytes(lambda: lin(xg).sum(), []) == 4 * 8 * 4 + 16 * 8 * 4
    assert saved_bytes(lambda: lin(xg).sum(), lin.parameters()) == 4 * 8 * 4


def test_estimate_parts():
    from trainer.model.describe import describe

    counts = describe("tiny")["parameters"]
    a = estimate_memory("tiny", 1, 300, "bf16", False)
    b = estimate_memory("tiny", 4, 300, "bf16", False)
    c = estimate_memory("tiny", 4, 300, "bf16", True)
    assert a["bytes"]["weights"] == counts["frozen"] * 2 + counts["trainable"] * 4
    assert a["bytes"]["optimizer"] == counts["trainable"] * 12
    assert b["bytes"]["activations"] == 4 * a["bytes"]["activations"]
    assert c["bytes"]["activations"] < b["bytes"]["activations"]
    assert estimate_memory("tiny", 1, 300, "fp32", False)["bytes"]["weights"] > a["bytes"]["weights"]
    with pytest.raises(ValueError, match="dtype 'fp16'"):
        estimate_memory("tiny", 1, 300, "fp16")


def test_describe_memory_cli():
    out = subprocess.run(
        [sys.executable, "-m", "trainer.model.describe", "--preset", "tiny", "--memory", "--tokens", "300", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["tokens"] == 300 and d["bytes"]["total"] == sum(
        d["bytes"][k] for k in ("weights", "optimizer", "activations", "logits")
    )
    assert set(d["largest_batch"]) == {"24 GB", "40 GB", "80 GB"}
