"""Real files and servers that several test modules make: a tiny real sweep config, image folders (with a
broken image), an HTTP server on loopback that answers with a status chosen by path, and the sweep config and
coordinator settings the in-process sweep tests build."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from hpo.config import SweepConfig
    from hpo.coordinator.settings import CoordinatorSettings


def sweep_config(tmp_path: Path, url: str, text: str, **overrides: Any) -> SweepConfig:
    """``text`` written as ``tmp_path/sweep.yaml`` and loaded for the storage ``url``, checkpoints under
    ``tmp_path/runs``."""
    from hpo.config import load_sweep_config

    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return load_sweep_config(path, storage=url, output_dir=str(tmp_path / "runs"), **overrides)


def coordinator_settings(url: str, name: str, root: Path, **overrides: Any) -> CoordinatorSettings:
    """A single-objective study ``name`` searching ``lr`` on ``val_acc``, for a ``Coordinator`` in-process."""
    import optuna

    from hpo.coordinator.settings import CoordinatorSettings

    fields: dict[str, Any] = {
        "storage_url": url,
        "study_name": name,
        "metric": "val_acc",
        "direction": "maximize",
        "distributions": {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)},
        "base_config": {"epochs": 3},
        "fixed_params": {},
        "checkpoint_root": str(root),
    }
    return CoordinatorSettings(**{**fields, **overrides})


def tiny_sweep(name: str) -> str:
    """A sweep config that trains for real in a few seconds a trial: 2 trials of a ResNet-18 from scratch on
    three digit classes at 32 px, one epoch each."""
    return f"""
study: {{name: {name}, n_trials: 2, sampler: {{name: random, seed: 0}}}}
search_space:
  lr: {{low: 1.0e-3, high: 3.0e-3, log: true}}
pruner: none
train:
  model: resnet18
  weights: null
  dataset: {{type: digits, classes: [0, 1, 2], max_train_samples: 60, max_val_samples: 30}}
  image_size: 32
  epochs: 1
"""


def write_images(folder: Path, n: int, seed: int, fmt: str = "JPEG", size: int = 64) -> list[Path]:
    """``n`` real RGB images of random pixels (64 px: half a JPEG keeps its header)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


def truncate(path: Path) -> Path:
    """Cut a real image file in half, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@contextlib.contextmanager
def http_server(status: Callable[[str], int]) -> Iterator[int]:
    """A real HTTP server on loopback answering every GET and HEAD with ``status(path)``; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status(self.path))
            self.end_headers()

        do_GET = _answer
        do_HEAD = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def start_cli_sweep(cfg: Path, storage: str, cwd: Path, tag: str) -> Any:
    """``hpo sweep cfg --storage storage --no-progress`` as a child process (its own Ray temp folder), output
    piped: a ``subprocess.Popen`` the test waits on, signals or kills."""
    import os
    import subprocess
    import sys
    import uuid

    env = {**os.environ, "HPO_RAY_TMPDIR": f"/tmp/hpo-{tag}-{uuid.uuid4().hex[:8]}"}
    exe = Path(sys.executable).parent / "hpo"
    return subprocess.Popen(
        [str(exe), "sweep", str(cfg), "--storage", storage, "--no-progress"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_reports(url: str, name: str, proc: Any, timeout: float) -> None:
    """Until a trial of study ``name`` has reported an epoch, while the sweep ``proc`` (``start_cli_sweep``) runs.
    Reads through the storage's own API: ``optuna.load_study`` would create the schema while the sweep does."""
    import time

    from storage import StorageError, opened

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with contextlib.suppress(KeyError, StorageError), opened(url, connect_timeout=5) as storage:
            trials = storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
            if any(t.intermediate_values for t in trials):
                return
        time.sleep(0.5)
    raise AssertionError("the sweep reported no epoch")
