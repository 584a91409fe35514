"""`hpo validate` fails fast on what would fail every trial: unreadable images (with --deep) and torchvision
weights that are neither cached nor downloadable. The real CLI as a subprocess (marked slow, like the other
end-to-end tests), on real image files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.config import load_sweep_config
from hpo.errors import ConfigError
from tests.conftest import run_cli
from tests.fixtures_files import truncate, write_images


def sweep_yaml(tmp_path: Path, data: Path, *, weights: str = "null", dataset: str = "") -> Path:
    path = tmp_path / "photos.yaml"
    path.write_text(
        "study: {n_trials: 2}\n"
        "train:\n"
        f"  weights: {weights}\n"
        f"  dataset: {{type: imagefolder, path: {data}, val_split: 0.5{dataset}}}\n"
        "  epochs: 1\n  image_size: 32\n"
    )
    return path


@pytest.fixture
def photos(tmp_path: Path) -> tuple[Path, Path]:
    """``(root, bad)``: PNG cats and JPEG dogs, one dog truncated."""
    root = tmp_path / "photos"
    write_images(root / "cat", 4, seed=0, fmt="PNG")
    dogs = write_images(root / "dog", 4, seed=1, fmt="JPEG")
    return root, truncate(dogs[1])


@pytest.mark.slow  # the real CLI as a subprocess (a few seconds each)
def test_validate_deep_names_the_unreadable_image_and_exits_2(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    root, bad = photos
    cfg = sweep_yaml(tmp_path, root)
    cheap = run_cli("validate", str(cfg), cwd=tmp_path, timeout=120)
    assert cheap.returncode == 0, cheap.stdout + cheap.stderr  # without --deep nothing is decoded
    r = run_cli("validate", str(cfg), "--deep", cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(f"unreadable image {bad}: image file is truncated"), r.stderr
    assert lines[-1] == (
        f"error: train.dataset: 1 unreadable image(s) under {root}; fix or delete them, "
        "or set train.dataset.on_bad_image: skip to train on the rest"
    )
    assert len(lines) == 2 and "Traceback" not in r.stdout + r.stderr and "ok" not in r.stdout.split()
    assert not (tmp_path / "hpo.db").exists()


@pytest.mark.slow  # the real CLI as a subprocess (a few seconds each)
def test_validate_deep_passes_with_skip_and_warns(tmp_path: Path, photos: tuple[Path, Path]) -> None:
    root, bad = photos
    r = run_cli("validate", str(sweep_yaml(tmp_path, root, dataset=", on_bad_image: skip")), "--deep", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: unreadable image {bad}: image file is truncated" in r.stdout
    assert "warning: train.dataset: 1 unreadable image(s) will be skipped (on_bad_image: skip)" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "ok" and r.stderr == ""


@pytest.mark.slow  # the real CLI as a subprocess (a few seconds each)
def test_validate_deep_lists_at_most_20(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root / "a", 2, seed=0, fmt="PNG")
    write_images(root / "b", 2, seed=1, fmt="PNG")
    for i in range(23):
        (root / "b" / f"zero{i:02d}.png").write_bytes(b"")
    r = run_cli("validate", str(sweep_yaml(tmp_path, root)), "--deep", cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 22 and lines[20] == "... and 3 more", lines
    assert all(line.startswith(f"unreadable image {root / 'b'}/zero") for line in lines[:20])
    assert lines[-1].startswith("error: train.dataset: 23 unreadable image(s)")


@pytest.mark.slow  # the real CLI as a subprocess (a few seconds each)
def test_validate_deep_on_a_clean_folder(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root / "a", 3, seed=0, fmt="JPEG")
    write_images(root / "b", 3, seed=1, fmt="PNG")
    r = run_cli("validate", str(sweep_yaml(tmp_path, root)), "--deep", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"images: every image under {root} decodes" in r.stdout
    assert "--deep" in run_cli("validate", "--help").stdout


@pytest.mark.slow  # the real CLI as a subprocess (a few seconds each)
def test_validate_with_uncached_weights_offline_exits_2_with_one_line(tmp_path: Path) -> None:
    from trials.models import probe_url

    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    if probe_url(url) is None:
        pytest.skip("this machine reaches download.pytorch.org: the weights would download")
    root = tmp_path / "photos"
    write_images(root / "a", 2, seed=0, fmt="PNG")
    write_images(root / "b", 2, seed=1, fmt="PNG")
    torch_home = tmp_path / "torch"  # empty: nothing cached
    cfg = sweep_yaml(tmp_path, root, weights="IMAGENET1K_V1")
    r = run_cli("validate", str(cfg), cwd=tmp_path, env={"TORCH_HOME": str(torch_home)}, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert r.stderr.startswith(
        f"error: train.weights: IMAGENET1K_V1 for resnet18 is not cached at {cached} and cannot be downloaded ("
    ), r.stderr
    assert f"place the file from {url} there" in r.stderr
    assert r.stderr.rstrip().endswith("or weights: null to train from random initialisation")
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"validate only looks for the file")
    ok = run_cli("validate", str(cfg), cwd=tmp_path, env={"TORCH_HOME": str(torch_home)}, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.parametrize("value", ["ignore", "true"])
def test_on_bad_image_rejects_unknown_values(tmp_path: Path, value: str) -> None:
    cfg = sweep_yaml(tmp_path, tmp_path, dataset=f", on_bad_image: {value}")
    with pytest.raises(ConfigError, match=r"train\.dataset\.on_bad_image: .*'error' or 'skip'") as info:
        load_sweep_config(cfg)
    assert "\n" not in str(info.value)
