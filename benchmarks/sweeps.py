"""Running hpo sweeps and their stock-Optuna twins the same way in every benchmark."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hpo.config import SweepConfig, load_sweep_config


def sweep_config(
    url: str,
    name: str,
    *,
    n_trials: int,
    parallel: int,
    cpus_per_trial: float = 1.0,
    epochs: int = 20,
    seed: int = 0,
    pruner: Mapping[str, Any] | str | None = None,
    train: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    workdir: str | None = None,
) -> SweepConfig:
    """A sweep over hpo's default search space (5 params, TPE) through the real config loader."""
    folder = Path(workdir or tempfile.mkdtemp(prefix="hpo-bench-"))
    data: dict[str, Any] = {
        "study": {"name": name, "n_trials": n_trials, "sampler": {"name": "tpe", "seed": seed}},
        "pruner": dict(pruner) if isinstance(pruner, Mapping) else pruner or {"n_startup_trials": 5},
        "resources": {"cpus_per_trial": cpus_per_trial},
        "parallel": parallel,
        "max_failures": 0,
        "train": {"epochs": epochs, "image_size": 32, **(train or {})},
    }
    for key, value in (extra or {}).items():
        data[key] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_sweep_config(path, storage=url, output_dir=str(folder / "runs"))


class FinishTimes:
    """An hpo ``Observer`` that records when each trial was told and how it ended."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.states: list[str] = []

    def message(self, text: str) -> None:
        pass

    def trial_finished(
        self, summary: Mapping[str, Any], counts: Mapping[str, int], best: Mapping[str, Any] | None
    ) -> None:
        self.times.append(time.perf_counter())
        self.states.append(str(summary["state"]))

    def tick(self, live: list[dict[str, Any]], counts: Mapping[str, int], best: Mapping[str, Any] | None) -> None:
        pass


def run_hpo(cfg: SweepConfig, workload: Callable[..., dict[str, Any]]) -> tuple[float, FinishTimes, Any]:
    """``run_sweep`` on the Ray already started; returns its wall time, the finish times and the result."""
    from hpo.sweep import run_sweep

    obs = FinishTimes()
    start = time.perf_counter()
    result = run_sweep(cfg, workload=workload, observer=obs, check_data=False, handle_sigint=False)
    wall = time.perf_counter() - start
    if result.exit_code != 0:
        raise RuntimeError(f"hpo sweep {cfg.study_name} ended with {result.stopped} (exit {result.exit_code})")
    return wall, obs, result


def steady_per_trial(times: list[float]) -> float:
    """Seconds per trial between the first and the last trial to finish: start-up and the first trial
    (Ray workers starting, caches filling) excluded."""
    if len(times) < 2:
        return float("nan")
    ts = sorted(times)
    return (ts[-1] - ts[0]) / (len(ts) - 1)
