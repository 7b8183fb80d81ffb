"""A tiny LLaMA and tokenizer, built offline and deterministically, for tests and the demo.

Like featstore's tiny encoders: the real classes (``LlamaForCausalLM``,
``PreTrainedTokenizerFast``) with a small config and random weights from a
fixed seed, saved with ``save_pretrained`` into a folder that then loads with
``from_pretrained`` exactly as a real checkpoint does. The tokenizer is a
byte-level BPE trained on prompt-like text, so any text encodes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = ["DEFAULT_TINY_DIR", "TINY_LLAMA", "TINY_MARKER", "build_tiny_llm", "real_llama_config"]

DEFAULT_TINY_DIR = "/tmp/trainer-tiny-llama"  # node-local: rebuilt identically wherever it is missing
TINY_SEED = 0
TINY_MARKER = "trainer_tiny.json"
TINY_VOCAB = 600  # byte alphabet (256) + specials + merges: enough to make words of the prompt single tokens
TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    initializer_range=0.02,
)
# Llama-2-7b's config.json (meta-llama/Llama-2-7b-chat-hf), for the meta-device model of ``trainer.model.describe``.
REAL_LLAMA = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)
SPECIALS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}

_CORPUS = (
    "[INST] <video></video> <feature></feature> The person in video says: . [emotion] [reason] [reason_v2] [/INST]",
    "happy sad neutral angry worried surprise fear contempt doubt",
    "Please determine which emotion label in the video represents: happy, sad, neutral, angry, worried, surprise, "
    "fear, contempt, doubt.",
    "What emotion does the person show? Describe the facial expression, the tone of voice and the words.",
    "A woman with short fair hair shows cheeks raised and lip corners pulled up (AU06, AU12), and speaks in a "
    "bright, rising tone. A person in a close-up portrait shows brows lowered and drawn together.",
    "The meeting is at three o'clock on Tuesday. I told you not to touch my things! We won the match, I can't "
    "believe it! I really miss how things used to be. What if the results come back bad? Wait, you're getting "
    "married? Did you hear that noise downstairs? Oh please, as if you could do any better. Are you sure that's "
    "what he said?",
    "In the video, the expression is strongest around the peak frame. The facial movements, the tone of voice and "
    "the content of the sentence agree with one another, so the person most likely feels this emotion.",
)


def real_llama_config():
    """Llama-2-7b's ``LlamaConfig`` (no download): 4096 wide, 32 layers, 32 heads, vocabulary 32000."""
    from transformers import LlamaConfig

    return LlamaConfig(**REAL_LLAMA)


def _recipe_id() -> str:
    """Hash of everything that decides the tiny folder's bytes, to tell a stale build from a current one."""
    import tokenizers
    import transformers

    text = json.dumps(
        {
            "llama": TINY_LLAMA,
            "vocab": TINY_VOCAB,
            "seed": TINY_SEED,
            "corpus": _CORPUS,
            "specials": SPECIALS,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _train_tokenizer():
    """A byte-level BPE tokenizer trained on the prompt-like corpus, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=list(SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)


def build_tiny_llm(directory: str | os.PathLike = DEFAULT_TINY_DIR) -> Path:
    """Build (once) the tiny LLaMA checkpoint and its tokenizer in ``directory``.

    Idempotent: a folder whose recipe marker matches is kept; otherwise it is
    built in a temporary folder and moved into place, so a concurrent reader
    never sees half a checkpoint.

    Returns:
        The folder, loadable with ``AutoModelForCausalLM.from_pretrained`` and
        ``AutoTokenizer.from_pretrained``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(directory)
    recipe = _recipe_id()
    marker = folder / TINY_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("recipe") == recipe:
        return folder
    tokenizer = _train_tokenizer()
    ids = {
        k.replace("_token", "_token_id"): tokenizer.convert_tokens_to_ids(v)
        for k, v in SPECIALS.items()
        if k != "unk_token"
    }
    config = LlamaConfig(vocab_size=len(tokenizer), **TINY_LLAMA, **ids)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / TINY_MARKER).write_text(json.dumps({"recipe": recipe, "seed": TINY_SEED}) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder
