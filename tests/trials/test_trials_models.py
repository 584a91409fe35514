"""Models: every name builds with the right head; weights from files, torchvision names, offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from trials.checkpoint import save_model
from trials.config import TrainConfig
from trials.errors import ModelError
from trials.models import DEFAULT_WEIGHTS, MODEL_NAMES, build_model, check_weights, head_path, split_parameters


def final_linear_and_before(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    leaves = [m for m in model.modules() if not list(m.children())]
    i = max(i for i, m in enumerate(leaves) if isinstance(m, nn.Linear))
    return leaves[i], leaves[i - 1]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_with_a_new_head(name: str) -> None:
    for num_classes, dropout in ((3, 0.1), (10, 0.35)):
        model = build_model(name, num_classes, dropout=dropout, weights=None)
        linear, before = final_linear_and_before(model)
        assert isinstance(linear, nn.Linear) and linear.out_features == num_classes
        assert isinstance(before, nn.Dropout) and before.p == dropout
        assert linear in list(model.get_submodule(head_path(model)).modules())
        backbone, head = split_parameters(model)
        ids = [id(p) for p in backbone + head]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))
        assert {id(p) for p in head} == {id(p) for p in linear.parameters()}
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_saved_model_loads_as_backbone_for_other_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("resnet18", 5, dropout=0.2, weights=None)
    path = tmp_path / "model.pt"
    save_model(
        path, source, TrainConfig(model="resnet18"), num_classes=5, class_names=list("abcde"), metrics={"val_acc": 0.5}
    )
    torch.manual_seed(1)
    target = build_model("resnet18", 3, dropout=0.2, weights=str(path))
    src, dst = source.state_dict(), target.state_dict()
    body = [k for k in dst if not k.startswith("fc.")]
    assert len(body) > 100 and all(torch.equal(src[k], dst[k]) for k in body)
    assert dst["fc.1.weight"].shape == (3, 512)
    # the raw state dict and the ~ form of the path work as well
    torch.save(source.state_dict(), tmp_path / "raw.pth")
    raw = build_model("resnet18", 7, dropout=0.0, weights=str(tmp_path / "raw.pth"))
    assert torch.equal(raw.state_dict()["conv1.weight"], src["conv1.weight"])


def test_weights_for_another_architecture_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_model(
        path,
        build_model("mobilenet_v3_small", 3, dropout=0.2, weights=None),
        TrainConfig(model="mobilenet_v3_small"),
        num_classes=3,
        class_names=list("abc"),
        metrics={},
    )
    expected = (
        r"do not fit resnet18 \(the file was saved for model mobilenet_v3_small\): "
        r"missing keys \[bn1.bias, .* and \d+ more\]"
    )
    with pytest.raises(ModelError, match=expected) as info:
        build_model("resnet18", 3, dropout=0.2, weights=str(path))
    assert "\n" not in str(info.value)


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"not found: {re.escape(str(tmp_path / 'nope.pt'))}"):
        build_model("resnet18", 3, dropout=0.2, weights=str(tmp_path / "nope.pt"))


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'resnet19' \(valid: resnet18, resnet34, .*convnext"):
        build_model("resnet19", 3, dropout=0.2, weights=None)


def test_unknown_weights_name_lists_the_valid_ones() -> None:
    with pytest.raises(
        ModelError,
        match=r"unknown weights 'IMAGENET1K_V2' for resnet18 \(valid: DEFAULT, "
        r"IMAGENET1K_V1, or a path",
    ):
        build_model("resnet18", 3, dropout=0.2, weights="IMAGENET1K_V2")


def test_offline_download_names_the_cache_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real download attempt: with no network it fails fast, and the message says where the file goes."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(
        ModelError,
        match=f"place the file from https://.* at {re.escape(str(expected))}, or set weights: null to train from",
    ):
        build_model("resnet18", 3, dropout=0.2, weights="IMAGENET1K_V1")


def test_the_default_weights_are_pretrained_and_a_user_function_keeps_its_own() -> None:
    """``train.weights`` defaults to DEFAULT: the pretrained weights of torchvision and timm models; for a user
    function, DEFAULT is the module as the function returns it (nothing loaded, nothing to cache)."""
    assert TrainConfig().weights == DEFAULT_WEIGHTS == "DEFAULT"
    assert TrainConfig.from_dict({}).weights == "DEFAULT"
    assert TrainConfig.from_dict({"weights": None}).weights is None
    check_weights("tests.usermodels:tiny_net", "DEFAULT", probe=lambda url: pytest.fail(f"probed {url}"))
    torch.manual_seed(0)
    default = build_model("tests.usermodels:tiny_net", 3, dropout=0.0, weights="DEFAULT")
    torch.manual_seed(0)
    none = build_model("tests.usermodels:tiny_net", 3, dropout=0.0, weights=None)
    assert all(
        torch.equal(a, b) for a, b in zip(default.state_dict().values(), none.state_dict().values(), strict=True)
    )
    with pytest.raises(ModelError, match=r"a user function's model takes DEFAULT .*, got 'IMAGENET1K_V1'"):
        check_weights("tests.usermodels:tiny_net", "IMAGENET1K_V1")


def test_weights_placed_in_the_cache_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Following the offline message works: a file placed at that path is loaded, no network needed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    imagenet_like = build_model("resnet18", 1000, dropout=0.0, weights=None)
    # torchvision's own layout: its head is a bare Linear called fc
    state = {k.replace("fc.1.", "fc."): v for k, v in imagenet_like.state_dict().items()}
    torch.save(state, cached)
    model = build_model("resnet18", 4, dropout=0.2, weights="DEFAULT")
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert model.state_dict()["fc.1.weight"].shape == (4, 512)
