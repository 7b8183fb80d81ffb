"""The network: projectors (features -> 260 tokens), the prompt and the one function that
embeds it, the frozen LLaMA with LoRA (``emotion_llama``), the tiny offline LLaMA, the
original Emotion-LLaMA checkpoint's layout (``original``), and parameter counts and GPU
memory on the meta device (``describe``, ``memory``).

May import torch, transformers and peft; imports nothing else from ``trainer``.
"""

__all__: list[str] = []
