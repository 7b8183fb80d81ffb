"""python -m trainer.model.describe: the real model's sizes, computed on the meta device."""

from __future__ import annotations

import json

from trainer.model.describe import describe, main


def test_real_preset_numbers(capsys):
    assert main(["--preset", "emotion-llama", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["parameters"]["lora"] == 33_554_432  # 2 modules x 32 layers x (4096*64 + 64*4096)
    assert d["parameters"]["projector"] == 41_439_232
    assert d["feature_tokens"] == 260 and d["video_tokens"] == 256
    assert d["parameters"]["frozen"] == 6_738_415_616  # Llama-2-7b
    assert d["llm"] == {"hidden_size": 4096, "layers": 32, "heads": 32, "vocab_size": 32000}


def test_tiny_preset_text(capsys):
    assert main(["--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "feature tokens" in out and "260" in out
    assert describe("tiny")["parameters"]["projector"] == 4 * 32 * 64 + 64 + 32 * 64 + 64 + 3 * (32 * 64 + 64)
