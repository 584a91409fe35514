"""Augmentation: s = 0 is the eval pipeline, and the change from the eval view grows with s."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images
from torchvision.transforms import v2

from trials.augment import AUGMENT_TABLE, ColorJitter, eval_transform, is_gray, train_transform
from trials.errors import TrainConfigError


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    """A fixed batch of real images: 40 handwritten digits (upscaled) and two photos (downscaled)."""
    digits = torch.from_numpy(load_digits().images[:40]).float().mul(255 / 16)[:, None]
    digits = torch.nn.functional.interpolate(digits, size=32, mode="bilinear").round().clamp(0, 255)
    batch = [d.to(torch.uint8).expand(3, -1, -1).contiguous() for d in digits]
    for photo in load_sample_images().images:
        small = Image.fromarray(photo).resize((64, 43))
        batch.append(torch.from_numpy(np.array(small)).permute(2, 0, 1).contiguous())
    return batch


def mean_change(strength: float, images: list[torch.Tensor], size: int = 32, repeats: int = 3) -> float:
    eval_t, train_t = eval_transform(size), train_transform(strength, size)
    torch.manual_seed(0)
    diffs = [(train_t(x) - eval_t(x)).abs().mean().item() for _ in range(repeats) for x in images]
    return float(np.mean(diffs))


def test_strength_zero_is_the_eval_pipeline(images: list[torch.Tensor]) -> None:
    train0, eval_t = train_transform(0.0, 32), eval_transform(32)
    assert repr(train0) == repr(eval_t)
    for x in images[:5] + images[-2:]:
        first, second = train0(x), train0(x)
        assert torch.equal(first, second)
        assert torch.equal(first, eval_t(x))


def test_change_from_eval_view_grows_with_strength(images: list[torch.Tensor]) -> None:
    changes = [mean_change(s, images) for s in (0.0, 0.25, 0.5, 1.0)]
    assert changes[0] == 0.0
    assert 0.0 < changes[1] < changes[2] < changes[3], changes


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_pil_and_tensor_inputs_give_normalized_floats(strength: float, images: list[torch.Tensor]) -> None:
    photo = images[-1]
    pil = Image.fromarray(photo.permute(1, 2, 0).numpy())
    for x in (photo, pil):
        out = train_transform(strength, 24)(x)
        assert out.shape == (3, 24, 24)
        assert out.dtype == torch.float32
        assert out.min().item() > -2.2 and out.max().item() < 2.7  # ImageNet-normalized range
    if strength == 0.0:
        assert torch.allclose(eval_transform(24)(photo), eval_transform(24)(pil), atol=0.05)


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_strength_outside_unit_interval_is_a_config_error(strength: float) -> None:
    with pytest.raises(TrainConfigError, match="aug_strength"):
        train_transform(strength, 32)


def test_table_names_a_transform_of_the_pipeline() -> None:
    pipeline = repr(train_transform(1.0, 32))
    for name, how in AUGMENT_TABLE:
        assert name in pipeline and "s" in how


def test_color_jitter_on_grayscale_images_draws_what_torchvision_draws(images: list[torch.Tensor]) -> None:
    """Saturation and hue are left out on equal-channel images only: the result is distributed as torchvision's
    full ColorJitter's (per-image mean and contrast over many draws), stays gray, and colour images still get
    their hue changed."""
    digits, photo = images[:8], images[-1]
    assert all(is_gray(x) for x in digits) and not is_gray(photo)
    ours, stock = ColorJitter(0.4, 0.4, 0.4, 0.1), v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)

    def stats(jitter: torch.nn.Module) -> tuple[float, float]:
        torch.manual_seed(0)
        outs = [jitter(x).float() for _ in range(60) for x in digits]
        assert all(is_gray(o) for o in outs)
        return float(np.mean([o.mean().item() for o in outs])), float(np.mean([o.std().item() for o in outs]))

    (m1, s1), (m2, s2) = stats(ours), stats(stock)
    assert abs(m1 - m2) < 0.03 * m2 and abs(s1 - s2) < 0.03 * s2, ((m1, s1), (m2, s2))
    torch.manual_seed(0)
    hues = [ColorJitter(0.0, 0.0, 0.0, 0.1)(photo) for _ in range(5)]
    assert any(not torch.equal(h, photo) for h in hues)  # colour images: hue is applied
