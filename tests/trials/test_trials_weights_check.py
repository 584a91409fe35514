"""The cheap weights check: torchvision weights that are neither in torch hub's cache nor downloadable fail
in preflight with one line naming the cache path, instead of on every trial.

The real probe runs: this machine has no network, so it fails fast. TORCH_HOME is a fresh folder per test,
so nothing depends on the user's cache.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures_files import http_server as serve
from trials.config import TrainConfig
from trials.errors import ModelError
from trials.models import cached_weights_path, check_weights, probe_url
from trials.preflight import check

RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_uncached_weights_without_network_fail_in_one_line(torch_home: Path) -> None:
    if probe_url(RESNET18_URL) is None:
        pytest.skip("this machine reaches download.pytorch.org: the weights would download")
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ModelError) as info:
        check(TrainConfig(weights="IMAGENET1K_V1"))
    message = str(info.value)
    assert re.fullmatch(
        rf"weights: IMAGENET1K_V1 for resnet18 is not cached at {re.escape(str(cached))} and cannot be "
        rf"downloaded \(.+\); place the file from {re.escape(RESNET18_URL)} there \(torch hub's cache: "
        r"\$TORCH_HOME/hub/checkpoints\), or set weights: /path/to/file\.pt, or weights: null to train from random "
        r"initialisation",
        message,
    ), message
    assert "\n" not in message
    default = r"weights: DEFAULT \(pretrained, the default\) for resnet18 is not cached at .*resnet18-f37072fd\.pth"
    with pytest.raises(ModelError, match=default):
        check(TrainConfig(weights="DEFAULT"))
    with pytest.raises(ModelError, match=default):  # the default: a config that does not name its weights
        check(TrainConfig())


def test_a_file_placed_in_the_cache_passes_without_probing(torch_home: Path) -> None:
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert cached_weights_path(RESNET18_URL) == cached
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"preflight only looks for the file")

    def no_probe(url: str) -> str | None:
        raise AssertionError(f"probed {url} although the file is cached")

    check_weights("resnet18", "IMAGENET1K_V1", probe=no_probe)
    check_weights("resnet18", "DEFAULT", probe=no_probe)
    check(TrainConfig(weights="IMAGENET1K_V1"))  # the real probe would fail here (no network): not called
    with pytest.raises(ModelError, match="resnet50-"):  # another model's file is not that one
        check(TrainConfig(model="resnet50", weights="IMAGENET1K_V1"))


def test_the_probe_decides_when_the_file_is_not_cached(torch_home: Path) -> None:
    check_weights("resnet18", "IMAGENET1K_V1", probe=lambda url: None)  # reachable: training downloads it
    with pytest.raises(ModelError, match=r"cannot be downloaded \(HTTP 403 Forbidden\); place the file from"):
        check_weights("resnet18", "IMAGENET1K_V1", probe=lambda url: "HTTP 403 Forbidden")
    with pytest.raises(ModelError, match="unknown weights 'IMAGENET1K_V9' for resnet18"):  # before any probe
        check_weights("resnet18", "IMAGENET1K_V9", probe=lambda url: pytest.fail("probed"))


@pytest.fixture
def http_server() -> Iterator[str]:
    """A real HTTP server on loopback: HEAD /ok answers 200, anything else 404."""
    with serve(lambda path: 200 if path == "/ok" else 404) as port:
        yield f"http://127.0.0.1:{port}"


def test_probe_url_answers(http_server: str) -> None:
    assert probe_url(f"{http_server}/ok") is None
    assert probe_url(f"{http_server}/missing.pth") == "HTTP 404 Not Found"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "refused" in (probe_url(f"http://127.0.0.1:{port}/w.pth", timeout=2) or "").lower()


def test_probe_url_is_bounded_by_its_timeout() -> None:
    """A server that accepts the connection and never answers costs the timeout, not more."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        why = probe_url(f"http://127.0.0.1:{server.getsockname()[1]}/w.pth", timeout=0.5)
    assert why in ("timed out", "no answer within 0.5s"), why
