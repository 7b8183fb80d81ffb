"""The trainable part of Emotion-LLaMA's ``MiniGPTv2`` (``minigpt4/models/minigpt_v2.py``) at any size.

Written from the original's code (repo HEAD 4ee28d2): the five projectors with
the original's attribute names, ``encode_img`` after ``ln_vision`` (the global
feature arrives already normalised, as the cache holds it), the peft-wrapped
LLaMA as ``base_model.py::init_llm`` builds it, and the runner's save
(``runner_base.py::_save_checkpoint``: the state dict minus every parameter
that does not require grad). Nothing here imports ``trainer``.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class OriginalMiniGPTv2(nn.Module):
    """Projectors + LoRA LLaMA with the original's names.

    Args:
        llama_model: a ``LlamaForCausalLM`` (frozen, then wrapped with LoRA here).
        vis_dim: EVA width (1408 in the original).
        feat_dim: width of the FaceMAE / VideoMAE / audio features (1024 in the original).
        lora_r, lora_alpha, lora_dropout: as ``MiniGPTv2.__init__`` (64, 16, 0.05).
        with_feature_projectors: False builds MiniGPT-v2 itself (only ``llama_proj``).
    """

    def __init__(
        self, llama_model, vis_dim, feat_dim, lora_r=64, lora_alpha=16, lora_dropout=0.05, with_feature_projectors=True
    ):
        super().__init__()
        for p in llama_model.parameters():
            p.requires_grad = False
        config = LoraConfig(
            r=lora_r,
            bias="none",
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "v_proj"],
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
        )
        self.llama_model = get_peft_model(llama_model, config)
        hidden = self.llama_model.config.hidden_size
        self.llama_proj = nn.Linear(vis_dim * 4, hidden)
        if with_feature_projectors:
            self.feats_llama_proj1 = nn.Linear(feat_dim, hidden)
            self.feats_llama_proj2 = nn.Linear(feat_dim, hidden)
            self.feats_llama_proj3 = nn.Linear(feat_dim, hidden)
            self.cls_tk_llama_proj = nn.Linear(vis_dim, hidden)

    def encode_img(self, image_embeds, video_features):
        """``MiniGPTv2.encode_img`` from ``image_embeds = ln_vision(visual_encoder(image))`` on.

        Args:
            image_embeds: [B, 1025, vis_dim] (CLS then patch tokens).
            video_features: [B, 3, feat_dim]: FaceMAE, VideoMAE, audio (``first_face.py``'s order).
        """
        image_cls_tk = image_embeds[:, :1, :]
        cls_tk_feats = self.cls_tk_llama_proj(image_cls_tk)
        image_embeds = image_embeds[:, 1:, :]
        bs, pn, hs = image_embeds.shape
        image_embeds = image_embeds.view(bs, int(pn / 4), int(hs * 4))
        image_inputs_llama = self.llama_proj(image_embeds)
        video_features_split = torch.split(video_features, 1, dim=1)
        output1 = self.feats_llama_proj1(video_features_split[0].squeeze(1))
        output2 = self.feats_llama_proj2(video_features_split[1].squeeze(1))
        output3 = self.feats_llama_proj3(video_features_split[2].squeeze(1))
        video_feats = torch.stack([output1, output2, output3], dim=1)
        return torch.cat((image_inputs_llama, video_feats, cls_tk_feats), dim=1)

    def trainable_state_dict(self):
        """What ``_save_checkpoint`` writes under ``"model"``."""
        grad = {k: v.requires_grad for k, v in self.named_parameters()}
        state = self.state_dict()
        for k in list(state):
            if k in grad and not grad[k]:
                del state[k]
        return state

    def save_like_runner(self, path, old_peft_names=False):
        """``torch.save({"model", "optimizer", "config", "scaler", "epoch"})`` as the runner does.

        ``old_peft_names`` writes the LoRA keys as peft 0.2.0 (the original's pin) named them:
        ``lora_A.weight``, without the adapter name that newer peft puts in (``lora_A.default.weight``).
        """
        state = self.trainable_state_dict()
        if old_peft_names:
            state = {k.replace(".default.", "."): v for k, v in state.items()}
        config = {
            "model": {"arch": "minigpt_v2", "lora_r": 64, "image_size": 448, "max_txt_len": 500},
            "run": {"task": "image_text_pretrain"},
        }
        torch.save(
            {
                "model": state,
                "optimizer": {"state": {}, "param_groups": []},
                "config": config,
                "scaler": None,
                "epoch": 3,
            },
            path,
        )


def randomise(module, seed):
    """Every trainable parameter to seeded noise (LoRA B starts at zero, which would hide a wrong map)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
