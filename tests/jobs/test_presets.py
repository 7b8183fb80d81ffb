"""The job with the AffectGPT and Emotion-LLaMA-v2 tiny presets on the mixed demo dataset:
one store holds several presets' specs side by side (a shared spec is never recomputed),
stored features equal the encoders called directly, shards carry each preset's slots,
and `featstore gc --keep` works across presets."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pytest

from featstore.cli import main as cli
from featstore.store import FeatureStore
from tests.featstore.store.test_exactly_once import tree
from tests.jobs.conftest import BAD, GOOD, JOB_ARGS, run_job

pytestmark = pytest.mark.slow
N = GOOD + len(BAD)
AFFECT = ["--preset", "tiny-affectgpt", "--encoders", "frames,audio"]
V2 = ["--preset", "tiny-emotion-llama-v2", "--encoders", "global,whisper"]


def stored_equal_direct(store_path, dataset, preset: str) -> int:
    """Each clip decoded and encoded alone, outside Ray, with the options written out here;
    byte for byte equal to its stored row. Returns the number of features checked."""
    from featstore.encoders import load_encoders
    from featstore.extract.encode import TINY_DIR
    from featstore.manifest import load_manifest
    from featstore.media.clip import DecodeConfig, collate, decode_clip
    from featstore.names import preset_slots

    store = FeatureStore.open(store_path)
    feats = {f.spec.name: f for f in store.features() if f.spec.name in preset_slots(preset)}
    cfg = DecodeConfig()
    options = {s: {"upstream": cfg.upstream(s), **({} if s == "audio" else {"clips_per_forward": 1})} for s in feats}
    encoders = load_encoders(preset, list(feats), device="cpu", tiny_dir=TINY_DIR, options=options)
    assert {s: e.spec.id for s, e in encoders.items()} == {s: f.spec.id for s, f in feats.items()}
    samples = {s.sample_id: s for s in load_manifest(dataset, "csv")}
    checked = 0
    for sid in store.sample_ids:
        clip = decode_clip(samples[sid], dataset, list(feats), cfg)
        if "frames" in clip.arrays:
            assert clip.arrays["frames"].shape == (8, 224, 224, 3)
        for slot, feat in feats.items():
            if slot in clip.failures:
                with pytest.raises(KeyError, match="failed"):
                    feat.read_id(sid)
                continue
            want = encoders[slot](collate([clip], slot)[1])[slot][0].astype(feat.spec.dtype)
            got = feat.read_id(sid)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), f"{slot} {sid}"
            checked += 1
    return checked


def spec_files(store_path, key: str) -> dict[str, str]:
    return {k: v for k, v in tree(store_path).items() if k.startswith(f"specs/{key}/")}


@pytest.fixture(scope="module")
def affect(reference, mixed_dataset, tmp_path_factory):
    """The reference store (preset tiny: local, audio) copied, then extracted again with tiny-affectgpt."""
    out = tmp_path_factory.mktemp("affect")
    store_path = out / "store.zarr"
    shutil.copytree(reference[0], store_path)
    keys = {f.spec.name: f.spec.key for f in FeatureStore.open(store_path).features()}
    audio_before = spec_files(store_path, keys["audio"])
    proc, summary = run_job(mixed_dataset, out, *AFFECT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return store_path, summary, keys, audio_before


def test_affectgpt_shares_the_audio_spec_and_computes_only_frames(affect):
    store_path, summary, keys, audio_before = affect
    assert summary["specs"]["audio"]["key"] == keys["audio"]  # the tiny preset's audio spec, same id
    assert summary["units"] == {"audio": [], "frames": [0, 1, 2, 3]}, summary["units"]  # audio: nothing pending
    assert summary["specs"]["frames"]["committed"] == GOOD + 1  # the silent clip has frames
    assert spec_files(store_path, keys["audio"]) == audio_before  # not one audio byte rewritten
    store = FeatureStore.open(store_path)
    assert sorted(f.spec.name for f in store.features()) == ["audio", "frames", "local"]
    frames = store.feature("frames").spec
    assert frames.shape == (8, 32) and frames.dtype == "float16" and frames.encoder == "CLIPVisionModel"
    assert frames.preprocess["upstream"]["frames"]["n_frames"] == 8
    assert frames.preprocess["upstream"]["resize"] == {
        "shortest_edge": 224,
        "center_crop": 224,
        "resample": "bicubic (PIL)",
    }


def test_affectgpt_features_equal_the_encoders_called_directly(affect, mixed_dataset):
    assert stored_equal_direct(affect[0], mixed_dataset, "tiny-affectgpt") == (GOOD + 1) + GOOD


def test_plan_across_presets_and_gc_keep(affect, mixed_dataset, tmp_path, capsys):
    store_path = tmp_path / "store.zarr"
    shutil.copytree(affect[0], store_path)
    capsys.readouterr()
    args = ["plan", str(store_path), "--dataset", str(mixed_dataset), *JOB_ARGS, "--gpus-per-actor", "0", "--json"]
    assert cli([*args, *AFFECT]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["units"] == {} and all(p["specs"][s]["todo"] == {} for s in ("frames", "audio"))
    assert cli([*args, *AFFECT, "--frames", "4"]) == 0  # another frame count is another spec
    p = json.loads(capsys.readouterr().out)
    assert p["specs"]["frames"]["todo"] == {"new spec id": N} and p["specs"]["audio"]["todo"] == {}

    kept = {k: v for k, v in tree(store_path).items() if k.startswith("specs/") and "/local-" not in k}
    assert cli(["gc", str(store_path), "--keep", "frames,audio"]) == 0
    store = FeatureStore.open(store_path)
    assert sorted(f.spec.name for f in store.features()) == ["audio", "frames"]
    after = {k: v for k, v in tree(store_path).items() if k.startswith("specs/")}
    assert {k: v for k, v in after.items() if not k.endswith("zarr.json")} == {
        k: v for k, v in kept.items() if not k.endswith("zarr.json")
    }


def test_emotion_llama_v2_extracts_global_and_whisper_and_exports_them(mixed_dataset, tmp_path):
    from featstore.encoders import load_encoders
    from featstore.extract.encode import TINY_DIR
    from featstore.media.clip import DecodeConfig

    proc, summary = run_job(mixed_dataset, tmp_path, *V2, "--export-wds", str(tmp_path / "shards"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {s: c["committed"] for s, c in summary["specs"].items()} == {"global": GOOD + 1, "whisper": GOOD}
    store = FeatureStore.open(tmp_path / "store.zarr")
    specs = {f.spec.name: f.spec for f in store.features()}
    assert specs["whisper"].shape == (32,) and specs["whisper"].pooling == "mean_real_audio_frames"
    # The global spec is the tiny (Emotion-LLaMA) preset's: the same class, checkpoint and options.
    cfg = DecodeConfig()
    tiny = load_encoders(
        "tiny",
        ["global"],
        device="cpu",
        tiny_dir=TINY_DIR,
        options={"global": {"upstream": cfg.upstream("global"), "clips_per_forward": 1}},
    )
    assert tiny["global"].spec.id == specs["global"].id
    assert stored_equal_direct(tmp_path / "store.zarr", mixed_dataset, "tiny-emotion-llama-v2") == 2 * GOOD + 1

    # One shard sample: __key__, one .npy per slot and the .json, readable with tar and numpy.
    shards = sorted((tmp_path / "shards").rglob("*.tar"))
    with tarfile.open(shards[0]) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    key = min(name.split(".")[0] for name in members)
    assert sorted(n.removeprefix(key) for n in members if n.startswith(key + ".")) == [
        ".global.npy",
        ".json",
        ".whisper.npy",
    ]
    g = np.load(io.BytesIO(members[f"{key}.global.npy"]), allow_pickle=False)
    w = np.load(io.BytesIO(members[f"{key}.whisper.npy"]), allow_pickle=False)
    assert (g.shape, g.dtype, w.shape, w.dtype) == ((1025, 32), np.float16, (32,), np.float16)
