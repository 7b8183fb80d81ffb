"""The demo dataset: real H.264 clips of real faces with speech-like audio and
MERR-style annotations (``python -m featstore.demo OUT``), and a round trip
through the store without Ray (``python -m featstore.demo.roundtrip``)."""

from featstore.demo.dataset import make_demo_dataset

__all__ = ["make_demo_dataset"]
