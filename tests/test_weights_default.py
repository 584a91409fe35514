"""``train.weights`` defaults to the model's pretrained weights (``DEFAULT``), through the real CLI.

Offline, a config that does not name its weights fails preflight in one line that names ``train.weights``, its
value, the torch hub cache path to place the file at, and the other ways on (a file, or null), with nothing
written to the study. A state dict placed at that path under the file name of the weights' URL is used as is:
torch hub checks a file's hash only when it downloads it, never a file already in its cache.

TORCH_HOME is a fresh folder per test, so nothing depends on the user's cache. The offline cases need a machine
that cannot reach download.pytorch.org (this one cannot): elsewhere they are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import torchvision
import yaml

from hpo import fingerprint
from hpo.config import load_sweep_config
from trials.checkpoint import load_model_file
from trials.models import probe_url

RESNET18 = torchvision.models.ResNet18_Weights.DEFAULT
#: Tiny: resnet18 at 32 px on 60 digit images, one epoch with the backbone frozen (so it keeps the placed weights).
TINY_TRAIN = """
  model: resnet18
  dataset: {type: digits, classes: [0, 1, 2], max_train_samples: 60, max_val_samples: 30}
  image_size: 32
  epochs: 1
  freeze_backbone_epochs: 1
"""


def offline() -> bool:
    return probe_url(RESNET18.url, timeout=3) is not None


def write_config(path: Path, name: str) -> Path:
    """A sweep config that does not name its weights (the default applies)."""
    path.write_text(
        f"study: {{name: {name}, n_trials: 1, sampler: {{name: random, seed: 0}}}}\npruner: none\nparallel: 1\n"
        "search_space: {batch_size: 16}\nearly_stopping: {patience: null}\n"
        f"train:{TINY_TRAIN}"
    )
    return path


def place_resnet18_weights(torch_home: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real ImageNet-shaped resnet18 state dict at ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``."""
    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = torch_home / "hub" / "checkpoints" / Path(RESNET18.url).name
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path, state


def studies_in(db: Path) -> list[str]:
    if not db.exists():
        return []
    return [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")]


def test_without_weights_offline_the_sweep_fails_preflight_in_one_line(tmp_path: Path, cli: Any) -> None:
    if not offline():
        pytest.skip("this machine reaches download.pytorch.org: the default weights would download")
    torch_home = tmp_path / "torch"  # empty: nothing cached
    cfg = write_config(tmp_path / "cfg.yaml", "nocache")
    db = tmp_path / "study.db"
    env = {"TORCH_HOME": str(torch_home)}
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    expected = (
        f"error: train.weights: DEFAULT (pretrained, the default) for resnet18 is not cached at {cached} and cannot "
        "be downloaded ("
    )
    for args in (["sweep", str(cfg), "--storage", f"sqlite:///{db}", "--no-progress"], ["validate", str(cfg)]):
        r = cli(*args, cwd=tmp_path, env=env, timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith(expected), lines[0]
        assert f"place the file from {RESNET18.url} there (torch hub's cache: $TORCH_HOME/hub/checkpoints)" in lines[0]
        assert lines[0].endswith(
            "or set weights: /path/to/file.pt, or weights: null to train from random initialisation"
        )
    assert studies_in(db) == []  # nothing written: no study (no database file at all)
    assert not db.exists()


def test_weights_placed_in_the_hub_cache_pass_preflight_and_train(tmp_path: Path, cli: Any) -> None:
    """The recipe of the error: the file placed under TORCH_HOME passes preflight, and training starts from it
    (the backbone, frozen for the one epoch, is exactly the placed state dict)."""
    torch_home = tmp_path / "torch"
    _, state = place_resnet18_weights(torch_home)
    env = {"TORCH_HOME": str(torch_home)}
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"train:{TINY_TRAIN}  batch_size: 16\n  early_stopping: {{patience: null}}\n")
    ok = cli("validate", str(write_config(tmp_path / "cfg.yaml", "cached")), cwd=tmp_path, env=env, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    r = cli("train", str(cfg), "--output", str(tmp_path / "run"), cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Downloading" not in r.stdout + r.stderr
    saved = load_model_file(tmp_path / "run" / "model.pt")
    assert saved["config"]["weights"] == "DEFAULT"
    trained = saved["model_state"]
    convs = [k for k in state if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    assert len(convs) > 10 and all(torch.equal(trained[k], state[k]) for k in convs)
    assert trained["fc.1.weight"].shape == (3, 512)  # a new 3-way head


@pytest.mark.slow  # a CLI sweep starts a local Ray
def test_the_export_names_its_weights(tmp_path: Path, cli: Any) -> None:
    """A sweep whose config left weights out exports ``weights: DEFAULT`` explicitly, so ``hpo train best.yaml``
    means the same on any hpo version; the export trains from the cached file."""
    torch_home = tmp_path / "torch"
    place_resnet18_weights(torch_home)
    env = {"TORCH_HOME": str(torch_home)}
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = write_config(tmp_path / "cfg.yaml", "exported")
    r = cli("sweep", str(cfg), "--storage", storage, "--no-progress", cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ex = cli("export", "--study", "exported", "--storage", storage, "-o", "best.yaml", cwd=tmp_path, env=env)
    assert ex.returncode == 0, ex.stderr
    doc = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert doc["train"]["weights"] == "DEFAULT"
    tr = cli("train", "best.yaml", "--output", str(tmp_path / "prod"), cwd=tmp_path, env=env, timeout=300)
    assert tr.returncode == 0, tr.stdout + tr.stderr


def test_a_study_made_when_the_default_was_random_init_is_told_the_default_moved(tmp_path: Path) -> None:
    """A study recorded before the default changed (its config left weights out, so they resolved to null): the
    same config now resolves to DEFAULT, and the sweep refuses with hpo's-default-changed, naming both ways on."""
    cfg = load_sweep_config(write_config(tmp_path / "cfg.yaml", "old"), storage=f"sqlite:///{tmp_path / 'x.db'}")
    new = fingerprint.resolve(cfg, version="now")
    assert new["values"]["train.weights"] == new["defaults"]["train.weights"] == "DEFAULT"
    old = {**new, "values": {**new["values"]}, "defaults": {**new["defaults"]}}
    old["values"]["train.weights"] = old["defaults"]["train.weights"] = None
    changes = fingerprint.compare(old, new)
    assert [(c.field, c.old, c.new, c.default_moved) for c in changes] == [("train.weights", None, "DEFAULT", True)]
    line = fingerprint.refusal("old", changes, old_version="then", new_version="now")
    assert re.search(r"hpo's defaults changed \(pin the old value in the config or use --allow-changes\)", line)
    assert 'train.weights null -> "DEFAULT" (hpo\'s default changed)' in line
    # pinning the old value: no change at all
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(
        (tmp_path / "cfg.yaml").read_text().replace("  model: resnet18\n", "  model: resnet18\n  weights: null\n")
    )
    same = fingerprint.resolve(load_sweep_config(pinned, storage=f"sqlite:///{tmp_path / 'x.db'}"), version="now")
    assert fingerprint.compare(old, same) == []
