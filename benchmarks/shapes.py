"""An image dataset made offline: shapes drawn with PIL, written as an ImageFolder of JPEGs.

P5 needs a second dataset beside scikit-learn's digits, and the protocol that chose hpo's search defaults
needs data the published claim never used. Both come from here, with disjoint sets of classes:

- ``CLAIM_KINDS`` (circle, square, triangle, star, cross): P5's second dataset;
- ``TUNING_KINDS`` (ring, diamond, bars, ellipse, chevron): the tuning protocol's dataset
  (``benchmarks/tune_defaults.py``).

Each image is one shape of random size, position, rotation, colour and line width on a noisy background
of a contrasting colour, with a second faint random shape as clutter, so that the classes take a few epochs of
fine-tuning to separate. Generation is deterministic in ``seed``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

CLAIM_KINDS = ("circle", "square", "triangle", "star", "cross")
TUNING_KINDS = ("ring", "diamond", "bars", "ellipse", "chevron")
ALL_KINDS = CLAIM_KINDS + TUNING_KINDS


def _polygon(cx: float, cy: float, r: float, sides: int, rot: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(rot + 2 * math.pi * i / sides), cy + r * math.sin(rot + 2 * math.pi * i / sides))
        for i in range(sides)
    ]


def _star(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rr = r if i % 2 == 0 else r * 0.45
        a = rot + math.pi * i / 5
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def draw(kind: str, size: int, rng: random.Random) -> object:
    """One ``size`` x ``size`` RGB image of a ``kind`` shape (a PIL image)."""
    from PIL import Image, ImageDraw

    dark = rng.random() < 0.5  # a light shape on a dark background, or the reverse
    bg = tuple(rng.randint(0, 90) if dark else rng.randint(165, 255) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)  # type: ignore[arg-type]
    d = ImageDraw.Draw(img)
    # clutter: a faint shape of a random kind
    _shape(d, kind, size, rng, faint=None, light=dark)
    noise = Image.effect_noise((size, size), rng.uniform(10, 30)).convert("RGB")
    return Image.blend(img, noise, rng.uniform(0.05, 0.15))


def _shape(
    d: object,
    kind: str,
    size: int,
    rng: random.Random,
    faint: tuple[int, ...] | None,
    scale: tuple[float, float] = (0.3, 0.45),
    light: bool = True,
) -> None:
    from PIL import ImageDraw

    assert isinstance(d, ImageDraw.ImageDraw)
    r = rng.uniform(*scale) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    rot = rng.uniform(0, 2 * math.pi)
    colour = tuple(rng.randint(165, 255) if light else rng.randint(0, 90) for _ in range(3))
    if faint is not None:  # a quarter of the way from the background to a random colour
        colour = tuple((a + 3 * b) // 4 for a, b in zip(colour, faint, strict=True))
    fill: object = colour
    width = max(1, int(rng.uniform(0.06, 0.14) * size))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        d.ellipse(box, fill=fill)  # type: ignore[arg-type]
    elif kind == "ring":
        d.ellipse(box, outline=fill, width=width)  # type: ignore[arg-type]
    elif kind == "ellipse":
        d.ellipse((cx - r, cy - r * 0.5, cx + r, cy + r * 0.5), fill=fill)  # type: ignore[arg-type]
    elif kind == "square":
        d.polygon(_polygon(cx, cy, r, 4, rot), fill=fill)  # type: ignore[arg-type]
    elif kind == "diamond":
        pts = [(cx, cy - r), (cx + r * 0.6, cy), (cx, cy + r), (cx - r * 0.6, cy)]
        d.polygon(pts, fill=fill)  # type: ignore[arg-type]
    elif kind == "triangle":
        d.polygon(_polygon(cx, cy, r, 3, rot), fill=fill)  # type: ignore[arg-type]
    elif kind == "star":
        d.polygon(_star(cx, cy, r, rot), fill=fill)  # type: ignore[arg-type]
    elif kind == "cross":
        d.line((cx - r, cy, cx + r, cy), fill=fill, width=width)  # type: ignore[arg-type]
        d.line((cx, cy - r, cx, cy + r), fill=fill, width=width)  # type: ignore[arg-type]
    elif kind == "bars":
        for k in (-1, 0, 1):
            y = cy + k * r * 0.6
            d.line((cx - r, y, cx + r, y), fill=fill, width=max(1, width // 2))  # type: ignore[arg-type]
    elif kind == "chevron":
        pts = [(cx - r, cy - r * 0.5), (cx, cy + r * 0.5), (cx + r, cy - r * 0.5)]
        d.line(pts, fill=fill, width=width)  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown shape kind {kind!r}")


def write_imagefolder(root: str | Path, kinds: Sequence[str], per_class: int, *, size: int = 32, seed: int = 0) -> Path:
    """Write ``per_class`` JPEGs of each of ``kinds`` to ``root/<kind>/<i>.jpg`` (skipped when the folder is
    already complete: the images depend only on the arguments). Returns ``root``."""
    root = Path(root)
    marker = root / f".complete-{per_class}-{size}-{seed}"
    if marker.is_file():
        return root
    for k, kind in enumerate(kinds):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}-{kind}-{k}")
        for i in range(per_class):
            draw(kind, size, rng).save(folder / f"{i:05d}.jpg", quality=90)  # type: ignore[attr-defined]
    marker.touch()
    return root
