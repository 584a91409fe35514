"""Your own model: ``timm/<name>`` and ``package.module:function`` train like torchvision's, with the head split,
local weights files, and one-line errors naming ``train.model`` before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from hpo.config import load_sweep_config
from hpo.errors import ConfigError
from hpo.sweep import preflight
from tests.conftest import REPO, run_cli
from trials.config import TrainConfig
from trials.errors import ModelError
from trials.models import build_model, check_model_name, check_weights, head_path, split_parameters
from trials.train import fit

pytest.importorskip("timm")  # the dev extra installs it; `pip install hpo` alone does not

TIMM = "timm/test_resnet"  # timm's own smallest ResNet (0.4 M parameters)
USER = "tests.usermodels:small_cnn"


def digits(model: str, **changes: object) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": model,
            "weights": None,
            "epochs": 1,
            "image_size": 32,
            "batch_size": 32,
            "num_workers": 0,
            "device": "cpu",
            "dataset": {"type": "digits", "classes": [0, 1, 2], "max_train_samples": 96, "max_val_samples": 48},
            **changes,
        }
    )


@pytest.mark.parametrize(
    ("name", "head"), [(TIMM, "fc"), (USER, "head"), ("tests.usermodels:tiny_net", "out.1"), ("timm/test_vit", "head")]
)
def test_heads_are_new_and_split(name: str, head: str) -> None:
    model = build_model(name, 3, dropout=0.3, weights=None)
    assert head_path(model) == head
    backbone, head_params = split_parameters(model)
    assert len(backbone) + len(head_params) == len(list(model.parameters())) and backbone and head_params
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    if name.endswith("tiny_net"):  # f(num_classes): hpo's Dropout goes right before the head
        drop = model.get_submodule("out.0")
        assert isinstance(drop, torch.nn.Dropout) and drop.p == 0.3


def test_timm_dropout_is_timms_drop_rate() -> None:
    assert build_model(TIMM, 3, dropout=0.25, weights=None).drop_rate == 0.25


@pytest.mark.parametrize("name", [TIMM, USER])
def test_fit_trains_with_a_frozen_backbone_then_a_slower_one(name: str) -> None:
    result = fit(digits(name, epochs=2, freeze_backbone_epochs=1, backbone_lr_mult=0.1))
    assert result.epochs_run == 2 and 0 <= result.best_metrics["val_acc"] <= 1
    assert result.num_classes == 3


@pytest.mark.parametrize("name", [TIMM, USER])
def test_a_local_weights_file_loads_everything_but_the_head(name: str, tmp_path: Path) -> None:
    source = build_model(name, 10, dropout=0.0, weights=None)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = build_model(name, 3, dropout=0.0, weights=str(tmp_path / "w.pt"))
    prefix = head_path(target) + "."
    for key, value in target.state_dict().items():
        if not key.startswith(prefix):
            assert torch.equal(value, source.state_dict()[key]), key


def test_a_safetensors_file_loads_too(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = build_model(TIMM, 10, dropout=0.0, weights=None)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    target = build_model(TIMM, 3, dropout=0.0, weights=str(tmp_path / "w.safetensors"))
    first = next(iter(source.state_dict()))
    assert torch.equal(target.state_dict()[first], source.state_dict()[first])


def test_timm_default_weights_load_from_the_hub_cache_only(tmp_path: Path) -> None:
    """A real Hugging Face hub cache layout, made here; the check and the load run offline in a fresh process."""
    import timm

    cfg = timm.models.get_pretrained_cfg("test_resnet")
    assert cfg is not None and cfg.hf_hub_id
    repo = tmp_path / "hub" / ("models--" + str(cfg.hf_hub_id).replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    source = timm.create_model("test_resnet")  # 1000 classes, as timm's weights are
    torch.save(source.state_dict(), repo / "snapshots" / ("0" * 40) / "pytorch_model.bin")
    torch.save(source.state_dict(), tmp_path / "source.pt")
    code = (
        "import torch; from trials.models import build_model, check_weights\n"
        f"check_weights('{TIMM}', 'DEFAULT')\n"
        f"m = build_model('{TIMM}', 1000, dropout=0.0, weights='DEFAULT')\n"
        f"s = torch.load(r'{tmp_path / 'source.pt'}')\n"
        "k = next(iter(s)); assert torch.equal(m.state_dict()[k], s[k])\n"
        "assert not torch.equal(m.fc.weight, s['fc.weight'])  # the head is new even with 1000 classes\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("name", "weights", "message"),
    [
        ("timm/not_a_model", None, "model: timm has no model 'not_a_model'"),
        ("timm/resnt18", None, r"similar: timm/resnet18"),
        ("nosuchpkg.mod:fn", None, r"model: cannot import nosuchpkg.mod \(No module named 'nosuchpkg'\).*PYTHONPATH"),
        ("os:getcwd", None, r"model: os:getcwd must take num_classes"),
        ("tests.usermodels:nope", None, "has no attribute 'nope'"),
        ("tests.usermodels:NOT_CALLABLE", None, "is not callable"),
        ("bad name:x y", None, "package.module:function"),
        (TIMM, "IMAGENET1K_V1", "weights: a timm model takes DEFAULT"),
        (USER, "IMAGENET1K_V1", "weights: a user function's model takes DEFAULT"),  # DEFAULT: what it returns
    ],
)
def test_bad_models_fail_in_one_line_before_training(name: str, weights: str | None, message: str) -> None:
    with pytest.raises(ModelError, match=message) as info:
        check_weights(name, weights)
    assert "\n" not in str(info.value)


def test_a_function_that_returns_no_module_fails_at_build() -> None:
    check_model_name("tests.usermodels:not_a_model")  # imports, callable, takes num_classes
    with pytest.raises(ModelError, match=r"returned a str, not a torch\.nn\.Module"):
        build_model("tests.usermodels:not_a_model", 3, dropout=0.0, weights=None)


def test_timm_default_weights_not_cached_say_how_to_place_them(tmp_path: Path) -> None:
    code = f"from trials.models import check_weights\ncheck_weights('{TIMM}', 'DEFAULT')\n"
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty"), "TORCH_HOME": str(tmp_path / "torch")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and "weights: DEFAULT for timm/test_resnet is not cached" in last
    assert "set weights to its path" in last
    assert last.endswith("or set weights: null to train from random initialisation")  # as torchvision's says


def sweep_config(tmp_path: Path, model: str | None, extra: str = "") -> Path:
    path = tmp_path / "cfg.yaml"
    model_line = f"model: {model}" if model else "seed: 0"
    path.write_text(
        f"""
study: {{name: custom, n_trials: 2, sampler: {{name: random, seed: 0}}}}
parallel: 2
search_space:
  lr: [1.0e-3, 1.0e-2]
{extra}
train:
  {model_line}
  weights: null
  epochs: 1
  image_size: 32
  dataset: {{type: digits, classes: [0, 1, 2], max_train_samples: 96, max_val_samples: 48}}
"""
    )
    return path


def test_searched_models_are_checked_before_the_study(tmp_path: Path) -> None:
    good = sweep_config(tmp_path, None, f"  model: [resnet18, {TIMM}, {USER}]")
    preflight(load_sweep_config(good, storage=f"sqlite:///{tmp_path / 'a.db'}"))
    bad = sweep_config(tmp_path, None, f"  model: [{TIMM}, nosuchpkg.mod:fn]")
    with pytest.raises(ConfigError, match=r"^search_space.model: train.model: cannot import nosuchpkg.mod"):
        preflight(load_sweep_config(bad, storage=f"sqlite:///{tmp_path / 'a.db'}"))
    assert not (tmp_path / "a.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", [TIMM, USER])
def test_a_cli_sweep_trains_your_own_model(tmp_path: Path, model: str) -> None:
    """The user module imports on Ray's workers: a local Ray's workers inherit the driver's PYTHONPATH."""
    cfg = sweep_config(tmp_path, model)
    db = f"sqlite:///{tmp_path / 's.db'}"
    env = {"PYTHONPATH": str(REPO)}
    r = run_cli("sweep", str(cfg), "--storage", db, "--no-progress", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    trials = optuna.load_study(study_name="custom", storage=db).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_a_cli_sweep_refuses_a_bad_model_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    cfg = sweep_config(tmp_path, "nosuchpkg.mod:fn")
    r = run_cli("sweep", str(cfg), "--storage", f"sqlite:///{tmp_path / 's.db'}", "--no-progress", cwd=tmp_path)
    assert r.returncode != 0
    assert "train.model: cannot import nosuchpkg.mod" in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "s.db").exists()
