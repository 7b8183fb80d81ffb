"""Draw a confusion matrix as a PNG with PIL (no plotting library): rows true, columns predicted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["draw_confusion"]

CELL = 56  # pixels per cell: room for a 4-digit count in PIL's default font
_WHITE, _BLACK, _BLUE = (255, 255, 255), (0, 0, 0), (33, 84, 160)


def _shade(frac: float) -> tuple[int, int, int]:
    """White (0) to blue (1), by the row-normalised count."""
    return tuple(int(round(w + (b - w) * frac)) for w, b in zip(_WHITE, _BLUE))


def draw_confusion(
    cm: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Write ``cm`` (counts, ``[true, predicted]``) as a PNG; cells shaded by the share of their row.

    Raises:
        ValueError: when ``cm`` is not square with one row per class.
    """
    from PIL import Image, ImageDraw, ImageFont

    cm = np.asarray(cm, dtype=np.int64)
    n = len(classes)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not fit {n} classes {list(classes)}")
    font = ImageFont.load_default()
    label_w = max(int(font.getlength(c)) for c in classes) + 16
    top = label_w + 40  # column labels are drawn rotated
    width, height = label_w + n * CELL + 20, top + n * CELL + 30
    img = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), title or "confusion matrix (rows: true, columns: predicted)", fill=_BLACK, font=font)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    for i, name in enumerate(classes):
        y = top + i * CELL
        draw.text((8, y + CELL // 2 - 6), name, fill=_BLACK, font=font)
        col = Image.new("RGB", (label_w, 14), _WHITE)
        ImageDraw.Draw(col).text((2, 0), name, fill=_BLACK, font=font)
        img.paste(col.rotate(90, expand=True), (label_w + i * CELL + CELL // 2 - 7, 30))
        for j in range(n):
            x = label_w + j * CELL
            draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=_shade(float(frac[i, j])), outline=(200, 200, 200))
            text = str(int(cm[i, j]))
            ink = _WHITE if frac[i, j] > 0.5 else _BLACK
            draw.text((x + (CELL - font.getlength(text)) / 2, y + CELL // 2 - 6), text, fill=ink, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
