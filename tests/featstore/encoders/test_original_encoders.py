"""The original's encoder files (LAVIS eva_vit_g.pth, the MAE and VideoMAE checkpoints of mae_340_UTT /
maeV_399_UTT) loaded into our encoders give the features of the original's own modules.

Each reference is the original's module layout written from its code (tests/reference/), at tiny width,
saved in the original's key names, then run the original's way: EVA with its pos_embed interpolated at
load, its strict=False load dropping block 39, and a fresh ln_vision; MAE's CLS token after the final
norm averaged over frames; VideoMAE's mean over every token of the last block. Inputs are real uint8
frames at the model size, so our resize is a no-op and the reference's pixels are simply x / 255
(no normalisation, as the original) or CLIP's mean/std for EVA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featstore.encoders import load_encoders
from featstore.encoders.global_eva import EvaGlobalEncoder
from featstore.encoders.local_mae import MaeLocalEncoder
from featstore.encoders.original import ORIGINAL_OPTIONS, save_converted
from featstore.encoders.pixels import CLIP_MEAN, CLIP_STD
from featstore.encoders.temporal_videomae import VideoMaeTemporalEncoder
from featstore.errors import CheckpointError
from tests.reference import eva_vit, mae_vit, videomae

TOL = dict(rtol=1e-5, atol=1e-5)
CPU32 = dict(device="cpu", dtype="float32", output_dtype="float32", attn_implementation="eager")


def _randomise(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.02 if p.dim() > 1 else 0.1
            base = 1.0 if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=gen))


def _frames(n, size, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ---- global: LAVIS EVA ViT-g ------------------------------------------------------------------------
EVA_WIDTH, EVA_FILE_BLOCKS = 88, 40  # one head of 88; 40 blocks as EVA ViT-g has, of which 39 are kept


@pytest.fixture(scope="module")
def eva_file(tmp_path_factory):
    """A LAVIS-layout eva_vit_g.pth (224 px grid, 40 blocks) and the original's model built from it at 448."""
    lavis = eva_vit.VisionTransformer(img_size=224, embed_dim=EVA_WIDTH, depth=EVA_FILE_BLOCKS)
    _randomise(lavis, 1)
    path = tmp_path_factory.mktemp("eva") / "eva_vit_g.pth"
    torch.save(lavis.state_dict(), path)
    # create_eva_vit_g(img_size=448): depth 39, pos_embed interpolated, strict=False load.
    ref = eva_vit.VisionTransformer(img_size=448, embed_dim=EVA_WIDTH, depth=39)
    state = torch.load(path, weights_only=True)
    eva_vit.interpolate_pos_embed(ref, state)
    result = ref.load_state_dict(state, strict=False)
    assert not result.missing_keys and {k.split(".")[1] for k in result.unexpected_keys} == {"39"}
    return path, ref.eval(), eva_vit.ln_vision(EVA_WIDTH).eval()


def test_eva_file_gives_the_originals_global_feature(eva_file):
    path, ref, ln = eva_file
    enc = EvaGlobalEncoder(str(path), **CPU32, **ORIGINAL_OPTIONS["global"])
    frames = _frames(2, 448, 0)
    got = enc({"frame": frames})["global"]
    pixels = (torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 255 - torch.tensor(CLIP_MEAN)[:, None, None]) / (
        torch.tensor(CLIP_STD)[:, None, None]
    )
    with torch.no_grad():
        want = ln(ref(pixels)).numpy()
    assert got.shape == (2, 1025, EVA_WIDTH)
    np.testing.assert_allclose(got, want, **TOL)
    assert enc.spec.preprocess["output"].startswith("last block output, LayerNorm without affine")
    # BLIP-2's post_layernorm output is another feature: it must differ (eps 1e-6 vs 1e-5) and have another id.
    other = EvaGlobalEncoder(str(path), **CPU32)
    assert other.spec.id != enc.spec.id and other.spec.weights == enc.spec.weights


def test_eva_file_and_its_converted_folder_give_one_spec_id(eva_file, tmp_path):
    path, _, _ = eva_file
    first = load_encoders("tiny", ["global"], overrides={"global": str(path)}, device="cpu", tiny_dir=tmp_path)
    again = EvaGlobalEncoder(str(path), device="cpu", **ORIGINAL_OPTIONS["global"])
    from transformers import Blip2VisionModel

    folder = save_converted("global", Blip2VisionModel, path, tmp_path / "eva-hf")
    from_folder = load_encoders("tiny", ["global"], overrides={"global": str(folder)}, device="cpu", tiny_dir=tmp_path)
    ids = {first["global"].spec.id, again.spec.id, from_folder["global"].spec.id}
    assert len(ids) == 1, ids
    assert first["global"].spec.preprocess["output"].endswith("(the original's ln_vision)")


def test_eva_file_with_a_stray_key_is_refused(eva_file, tmp_path):
    path, _, _ = eva_file
    state = torch.load(path, weights_only=True)
    state["rel_pos_bias.relative_position_bias_table"] = torch.zeros(3, 1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="rel_pos_bias.relative_position_bias_table"):
        EvaGlobalEncoder(str(bad), device="cpu")


# ---- local: MAE ViT (mae_340_UTT) ---------------------------------------------------------------------
MAE_WIDTH = 128  # two heads of 64


@pytest.fixture(scope="module")
def mae_file(tmp_path_factory):
    """An MAE pre-training checkpoint ({"model": encoder + decoder + mask_token}) and the original's model."""
    ref = mae_vit.VisionTransformer(embed_dim=MAE_WIDTH, depth=2)
    _randomise(ref, 2)
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("head.")}
    state["mask_token"] = torch.zeros(1, 1, 32)
    state["decoder_embed.weight"] = torch.randn(32, MAE_WIDTH)
    state["decoder_pred.weight"] = torch.randn(768, 32)
    path = tmp_path_factory.mktemp("mae") / "mae_checkpoint-340.pth"
    torch.save({"model": state, "epoch": 340}, path)
    return path, ref.eval()


def test_mae_file_gives_the_originals_local_feature(mae_file, tmp_path):
    path, ref = mae_file
    enc = MaeLocalEncoder(str(path), **CPU32, **ORIGINAL_OPTIONS["local"])
    faces = np.stack([_frames(3, 224, 10), _frames(3, 224, 11)])  # 2 clips x 3 face frames
    got = enc({"faces": faces})["local"]
    with torch.no_grad():
        want = np.stack(
            [ref.forward_features(torch.from_numpy(c).float().permute(0, 3, 1, 2) / 255).mean(0).numpy() for c in faces]
        )
    np.testing.assert_allclose(got, want, **TOL)
    assert enc.spec.pooling == "cls_token_then_mean_frames"
    assert (
        load_encoders("tiny", ["local"], overrides={"local": str(path)}, device="cpu", tiny_dir="/tmp/unused")[
            "local"
        ].spec.id
        == MaeLocalEncoder(str(path), device="cpu", **ORIGINAL_OPTIONS["local"]).spec.id
    )


# ---- temporal: VideoMAE (maeV_399_UTT) -----------------------------------------------------------------
VMAE_WIDTH = 128


@pytest.fixture(scope="module")
def videomae_file(tmp_path_factory):
    """A VideoMAE pre-training checkpoint (encoder.* with its final norm, decoder.*, mask_token)."""
    ref = videomae.VisionTransformer(embed_dim=VMAE_WIDTH, depth=2)
    _randomise(ref, 3)
    state = {f"encoder.{k}": v for k, v in ref.state_dict().items() if not k.startswith(("head.", "fc_norm."))}
    state["encoder.norm.weight"], state["encoder.norm.bias"] = torch.rand(VMAE_WIDTH), torch.rand(VMAE_WIDTH)
    state["decoder.head.weight"] = torch.randn(1536, 32)
    state["encoder_to_decoder.weight"] = torch.randn(32, VMAE_WIDTH)
    state["mask_token"] = torch.zeros(1, 1, 32)
    path = tmp_path_factory.mktemp("videomae") / "maeVideo_ckp399.pth"
    torch.save({"model": state}, path)
    return path, ref.eval()


def test_videomae_file_gives_the_originals_temporal_feature(videomae_file):
    path, ref = videomae_file
    enc = VideoMaeTemporalEncoder(str(path), **CPU32, **ORIGINAL_OPTIONS["temporal"])
    clip = _frames(16, 224, 20)[None]  # [1, T, H, W, 3]
    got = enc({"face_frames": clip})["temporal"]
    x = torch.from_numpy(clip).float().permute(0, 4, 1, 2, 3) / 255  # [B, C, T, H, W], as ToTorchFormatTensor
    with torch.no_grad():
        want = ref.forward_features(x).mean(1).numpy()
    np.testing.assert_allclose(got, want, **TOL)


class Hook:
    """An object a pickled file could carry: unpickling it would run code of the file's choosing."""


def test_original_files_are_read_as_tensors_only(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "hook": Hook()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        MaeLocalEncoder(str(path), device="cpu")


def test_the_job_plans_original_files_with_the_originals_preprocessing(mae_file, eva_file):
    """What jobs/extract.py and featstore plan compute for --checkpoint SLOT=FILE.pth (no Ray: the planner)."""
    from featstore.extract.config import ExtractConfig
    from featstore.extract.specs import planned_specs

    cfg = ExtractConfig(
        preset="tiny", encoders="global,local", checkpoint=[f"local={mae_file[0]}", f"global={eva_file[0]}"]
    )
    specs = planned_specs(cfg, None)
    assert specs["local"].pooling == "cls_token_then_mean_frames"
    assert specs["local"].preprocess["image_mean"] == [0.0, 0.0, 0.0]
    assert specs["global"].preprocess["output"].endswith("(the original's ln_vision)")
    forced = planned_specs(ExtractConfig(**{**cfg.to_dict(), "global_output": "post_layernorm"}), None)
    assert forced["global"].id != specs["global"].id and forced["local"].id == specs["local"].id


def test_convert_checkpoint_command(mae_file, videomae_file, tmp_path, capsys):
    from featstore.cli import main as cli

    for slot, (path, _), cls in (
        ("local", mae_file, MaeLocalEncoder),
        ("temporal", videomae_file, VideoMaeTemporalEncoder),
    ):
        out = tmp_path / f"{slot}-converted"
        assert cli(["convert-checkpoint", slot, str(path), str(out)]) == 0
        assert f"--checkpoint {slot}={out}" in capsys.readouterr().out
        tiny = tmp_path / "tiny"
        by_file = load_encoders("tiny", [slot], overrides={slot: str(path)}, device="cpu", tiny_dir=tiny)[slot]
        by_folder = load_encoders("tiny", [slot], overrides={slot: str(out)}, device="cpu", tiny_dir=tiny)[slot]
        assert isinstance(by_folder, cls) and by_file.spec.id == by_folder.spec.id
    assert cli(["convert-checkpoint", "local", str(tmp_path / "none.pth"), str(tmp_path / "x")]) == 2
    assert "none.pth" in capsys.readouterr().err
