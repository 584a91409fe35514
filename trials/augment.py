"""Image transforms: one deterministic eval pipeline, and a training pipeline driven by one scalar.

A sweep searches a single ``aug_strength`` s in [0, 1] instead of a dozen augmentation knobs: every
random transform's strength grows with s (see ``AUGMENT_TABLE``), and s = 0 is exactly the eval
pipeline. Inputs are uint8 CHW tensors or PIL images; outputs are float32 CHW tensors normalized
with the ImageNet statistics that torchvision's pretrained weights expect.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from trials.errors import TrainConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Eval resizes the shorter side to image_size / 0.875 and center-crops image_size (torchvision's recipe).
EVAL_CROP_FRACTION = 0.875
_EVAL_AREA = EVAL_CROP_FRACTION**2

#: (transform, how it scales with s) for the README; kept next to the code that does it.
AUGMENT_TABLE: list[tuple[str, str]] = [
    (
        "RandomResizedCrop",
        "area fraction from [0.77, 0.77] (the eval crop) towards [0.08, 1] at s=1; "
        "aspect ratio within [1/(1+s/3), 1+s/3]",
    ),
    ("RandomHorizontalFlip", "p = 0.5·s"),
    ("RandomRotation", "uniform in ±15·s degrees"),
    ("ColorJitter", "brightness, contrast, saturation ±0.4·s; hue ±0.1·s"),
    ("RandAugment", "2 ops, magnitude round(9·s) of 31, applied with p = s"),
    ("RandomErasing", "p = 0.25·s, erased area 2-20% of the image"),
]


def _resize_size(image_size: int) -> int:
    return max(image_size, round(image_size / EVAL_CROP_FRACTION))


def _to_float() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def eval_transform(image_size: int) -> v2.Compose:
    """Deterministic: resize the shorter side, center-crop ``image_size``, float, ImageNet-normalize."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(_resize_size(image_size), antialias=True),
            v2.CenterCrop(image_size),
            *_to_float(),
        ]
    )


def _lerp(a: float, b: float, s: float) -> float:
    return a + (b - a) * s


def is_gray(image: object) -> bool:
    """Whether ``image`` is a 3-channel tensor whose channels are equal (a grayscale image stored as RGB)."""
    return (
        isinstance(image, torch.Tensor)
        and image.ndim >= 3
        and image.shape[-3] == 3
        and torch.equal(image[..., 0, :, :], image[..., 1, :, :])
        and torch.equal(image[..., 1, :, :], image[..., 2, :, :])
    )


class ColorJitter(torch.nn.Module):
    """``v2.ColorJitter`` that leaves saturation and hue out on grayscale images (equal RGB channels).

    On such an image both are no-ops (saturation moves a pixel by at most 1 of 255, from the rounding of the
    grayscale weights; hue changes nothing), yet on a 32 px image they cost 1.2 of the pipeline's 2.6 ms, hue
    alone 0.9 ms. Brightness and contrast are drawn from the same ranges, in a random order, either way.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        super().__init__()
        self.color = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
        self.gray = v2.ColorJitter(brightness=brightness, contrast=contrast)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = (self.gray if is_gray(image) else self.color)(image)
        return out


def train_transform(strength: float, image_size: int) -> v2.Compose:
    """Random training pipeline whose strength grows monotonically with ``strength`` in [0, 1].

    ``strength`` 0 returns exactly ``eval_transform(image_size)`` (no randomness at all).
    """
    s = float(strength)
    if not 0.0 <= s <= 1.0:
        raise TrainConfigError("aug_strength", strength, "must be in [0, 1]")
    if s == 0.0:
        return eval_transform(image_size)
    stretch = 1.0 + s / 3.0
    return v2.Compose(
        [
            v2.ToImage(),
            # Starts from the eval crop's area so that a small s stays close to the eval view.
            v2.RandomResizedCrop(
                image_size,
                scale=(_lerp(_EVAL_AREA, 0.08, s), _lerp(_EVAL_AREA, 1.0, s)),
                ratio=(1.0 / stretch, stretch),
                antialias=True,
            ),
            v2.RandomHorizontalFlip(p=0.5 * s),
            v2.RandomRotation(degrees=15.0 * s),
            ColorJitter(brightness=0.4 * s, contrast=0.4 * s, saturation=0.4 * s, hue=0.1 * s),
            v2.RandomApply([v2.RandAugment(num_ops=2, magnitude=round(9 * s))], p=s),
            *_to_float(),
            v2.RandomErasing(p=0.25 * s, scale=(0.02, 0.2), value=0.0),
        ]
    )
