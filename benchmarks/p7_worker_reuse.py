"""P7: worker reuse: from a slot's previous trial ending to the next trial's first optimizer step.

Both sides run the same trials, two at a time, 1 CPU (and 1 torch thread) each, on the same warm Ray: the
quickstart's workload cut small (ResNet-18 with the quickstart's pretrained digits-0-4 checkpoint loaded as
weights, digits 5-9: 64 train / 32 val images, batch 32, one epoch), through ``benchmarks.workloads.timed_fit``
(``trials.fit`` via hpo's ``train_workload``), which records in the trial's folder its process, when it was
entered, when its first optimizer step was taken (a torch optimizer hook) and when it returned.

- hpo: ``run_sweep`` (pruner off), trials as Ray tasks on reused worker processes.
- Ray Tune, as its docs recommend for trials that are slow to start: ``TuneConfig(reuse_actors=True)``,
  ``max_concurrent_trials=2``, ``tune.with_resources(workloads.tune_fit, {"cpu": 1})``, FIFO (no ASHA); each
  trial runs the same ``timed_fit`` on a config built by hpo's own ``trial_config``, reporting each epoch
  with ``tune.report``.

The measure, the same on both sides: with at most 2 trials running, the j-th trial to start takes the slot
freed by the (j-2)-th trial to end; its hand-over is from that end to its first optimizer step (the result
going back, the scheduler's turn, the dispatch, ``fit``'s set-up: data, model, weight load, first step).
A run's first 2 trials (on a fresh slot) are left out. Each run gives the median of its hand-overs; runs are
repeated, hpo and Ray Tune interleaved.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.common import (
    TUNE_MISSING,
    Comparison,
    Result,
    Row,
    fresh_database,
    interleaved,
    median,
    quiet_optuna,
    secs,
    tune_available,
)
from benchmarks.sweeps import run_hpo, sweep_config

GOAL_VS_TUNE = 1.0
PARALLEL = 2
CPUS_PER_TRIAL = 1
SIZES = {False: (8, 5), True: (3, 2)}  # quick -> (trials per run, repeats)
QUICKSTART_WEIGHTS = "~/.cache/hpo/pretrained/resnet18-digits04/model.pt"
PRETRAIN_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "pretrain_digits04.yaml"


def train_config(weights: str) -> dict[str, Any]:
    """The quickstart's training config, cut to a few batches (what P7 times is everything before them)."""
    return {
        "model": "resnet18",
        "weights": weights,
        "dataset": {
            "type": "digits",
            "classes": [5, 6, 7, 8, 9],
            "val_split": 0.2,
            "max_train_samples": 64,
            "max_val_samples": 32,
        },
        "backbone_lr_mult": 0.5,
    }


def ensure_weights(weights: str | None) -> str:
    """The checkpoint to load: ``weights``, else the quickstart's, made as ``make pretrain`` makes it if missing."""
    if weights:
        return str(Path(weights).expanduser())
    path = Path(QUICKSTART_WEIGHTS).expanduser()
    if not path.is_file():
        from hpo.train import train_from_file

        train_from_file(PRETRAIN_CONFIG, path.parent, log=lambda _: None)
    return str(path)


def handovers(records: Sequence[Mapping[str, Any]], parallel: int) -> list[dict[str, float]]:
    """Each reused slot's hand-over in one run: the j-th trial to start (by entry) paired with the (j-parallel)-th
    trial to end; ``to_entry_s`` from that end to the workload's entry, ``to_step_s`` to its first optimizer step."""
    starts = sorted(records, key=lambda r: float(r["entered_at"]))
    ends = sorted(float(r["exited_at"]) for r in records)
    out = []
    for j, r in enumerate(starts[parallel:], start=parallel):
        freed = ends[j - parallel]
        out.append({"to_entry_s": float(r["entered_at"]) - freed, "to_step_s": float(r["first_step_at"]) - freed})
    return out


class _Side:
    """One side's runs: each returns the median hand-over to the first optimizer step; every run's records kept."""

    def __init__(self, run_once: Any, n_trials: int) -> None:
        self._run_once, self.n_trials = run_once, n_trials
        self.runs: list[list[dict[str, float]]] = []
        self.records: list[list[dict[str, Any]]] = []
        self.calls = 0  # a new study per run

    def __call__(self) -> float:
        folder = tempfile.mkdtemp(prefix="hpo-bench-p7-")
        self.calls += 1
        try:
            self._run_once(folder, self.calls)
            records = workloads.read_timings(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if len(records) != self.n_trials or any(r.get("first_step_at") is None for r in records):
            raise RuntimeError(f"P7: {len(records)} timed trials of {self.n_trials}, or one without an optimizer step")
        self.records.append(records)
        self.runs.append(handovers(records, PARALLEL))
        return median([h["to_step_s"] for h in self.runs[-1]])

    def per_run(self, key: str) -> list[float]:
        return [median([h[key] for h in run]) for run in self.runs]


def tune_settings() -> dict[str, Any]:
    return {
        "reuse_actors": True,
        "max_concurrent_trials": PARALLEL,
        "resources_per_trial": {"cpu": CPUS_PER_TRIAL},
        "num_threads": CPUS_PER_TRIAL,
        "scheduler": "FIFO (no ASHA)",
        "search": "grid over the trials' configs (hpo's trial_config, random params)",
        "trainable": "benchmarks.workloads.tune_fit -> timed_fit -> trials.fit",
        "ray": "the same warm local Ray as hpo",
    }


def run(admin_url: str, quick: bool = False, *, weights: str | None = None, with_tune: bool | None = None) -> Result:
    import optuna

    from hpo.space import trial_config

    quiet_optuna()
    n_trials, repeats = SIZES[quick]
    with_tune = tune_available() if with_tune is None else with_tune
    weights = ensure_weights(weights)
    train = {**train_config(weights), "epochs": 1}
    result = Result("P7", "Worker reuse: slot hand-over to the first optimizer step")
    result.settings = {
        "n_trials": n_trials,
        "parallel": PARALLEL,
        "cpus_per_trial": CPUS_PER_TRIAL,
        "repeats": repeats,
        "model": "resnet18",
        "weights": "the quickstart's pretrained checkpoint (digits 0-4)"
        if weights == str(Path(QUICKSTART_WEIGHTS).expanduser())
        else "a pretrained checkpoint (digits 0-4) made by `hpo train`",
        "dataset": "digits 5-9, 64 train / 32 val images, batch 32, one epoch",
        "pruner": "none",
    }

    with fresh_database(admin_url, "p7") as url:

        def config(folder: str, i: int, side: str) -> Any:
            return sweep_config(
                url,
                f"p7-{side}-{i}",
                n_trials=n_trials,
                parallel=PARALLEL,
                cpus_per_trial=CPUS_PER_TRIAL,
                epochs=1,
                pruner="none",
                train=train,
                extra={"search_space": {"batch_size": 32}},
                workdir=folder,
            )

        def hpo_once(folder: str, i: int) -> None:
            run_hpo(config(folder, i, "hpo"), workloads.timed_fit)

        def tune_once(folder: str, i: int) -> None:
            cfg = config(folder, i, "tune")  # the same base config and space; params drawn at random
            sampler = optuna.samplers.RandomSampler(seed=i)
            study = optuna.create_study(sampler=sampler)
            configs = [
                trial_config(cfg.base_train.to_dict(), cfg.space.fixed, study.ask(cfg.space.distributions).params)
                for _ in range(n_trials)
            ]
            run_tune(configs, folder)

        hpo_side, tune_side = _Side(hpo_once, n_trials), _Side(tune_once, n_trials)
        if not quick:  # a long-lived cluster's workers have imported torch already: one sweep, unrecorded
            hpo_side()
            hpo_side.runs.clear()
            hpo_side.records.clear()
        cmp = interleaved(hpo_side, tune_side, repeats) if with_tune else None

    result.raw = {
        "hpo": {"handovers": hpo_side.runs, "records": hpo_side.records},
        "ray_tune": {"handovers": tune_side.runs, "records": tune_side.records} if with_tune else None,
        "comparison": cmp.as_dict() if cmp else None,
    }
    if cmp is None:
        result.notes.append("Ray Tune not run: " + TUNE_MISSING + ".")
        return result
    result.baselines = {"ray_tune": tune_settings()}
    entry = Comparison(hpo_side.per_run("to_entry_s"), tune_side.per_run("to_entry_s"))
    setup = Comparison(
        [s - e for s, e in zip(cmp.hpo, entry.hpo, strict=True)],
        [s - e for s, e in zip(cmp.baseline, entry.baseline, strict=True)],
    )
    result.rows += [
        Row(
            "slot hand-over to first optimizer step, reused worker: hpo vs Ray Tune (reuse_actors=True)",
            f"hpo / Ray Tune <= {GOAL_VS_TUNE:.2f}",
            secs(median(cmp.hpo)),
            secs(median(cmp.baseline)),
            cmp.fmt_ratio(),
            cmp.ratio <= GOAL_VS_TUNE,
            comparison=cmp,
        ),
        Row(
            "of which: previous trial's end to the next trial's entry (result, scheduling, dispatch)",
            "information",
            secs(median(entry.hpo)),
            secs(median(entry.baseline)),
            entry.fmt_ratio(),
            None,
            comparison=entry,
        ),
        Row(
            "of which: entry to first optimizer step (`fit`: data, model, weight load, first step)",
            "information",
            secs(median(setup.hpo)),
            secs(median(setup.baseline)),
            setup.fmt_ratio(),
            None,
            comparison=setup,
        ),
    ]
    n_handovers = sum(len(r) for r in hpo_side.runs)
    result.notes += [
        f"{repeats} runs per side, interleaved, {n_trials} trials per run, parallel {PARALLEL}, {CPUS_PER_TRIAL} CPU "
        f"and 1 torch thread per trial: {n_handovers} hand-overs per side (each run's median is one sample; ratio: "
        "median of the per-pair ratios, 95% bootstrap CI). The breakdown rows are the medians of each run's parts "
        "(the parts' medians need not add up to the total's).",
        "The workload: the quickstart's (ResNet-18, its pretrained digits-0-4 checkpoint loaded as weights, a new "
        "head for digits 5-9) cut to 64 training images, batch 32, one epoch: what is timed is what happens before "
        "training, not training. The clock stops after the first `optimizer.step()` (a torch hook), not when the "
        "first batch is fetched.",
        "Ray Tune: `Tuner.fit` with `TuneConfig(reuse_actors=True)`, `max_concurrent_trials=2`, 1 CPU per trial, "
        "FIFO, the same Ray; each trial calls the same `timed_fit` -> `trials.fit`. Tune starts its trial actors "
        "anew in every `Tuner.fit` (their first trials import torch: left out, like every run's first 2 trials); "
        "hpo's task workers stay up across sweeps (in full mode one unrecorded warm-up sweep runs first).",
    ]
    return result


def run_tune(configs: list[dict[str, Any]], folder: str) -> None:
    """The trials' configs through Ray Tune (``reuse_actors=True``); each records its timing under ``folder``."""
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    tuner = tune.Tuner(
        tune.with_resources(workloads.tune_fit, {"cpu": CPUS_PER_TRIAL}),
        param_space={
            "train": tune.grid_search(configs),
            "checkpoint_root": str(Path(folder, "tune-trials")),
            "num_threads": CPUS_PER_TRIAL,
        },
        tune_config=tune.TuneConfig(max_concurrent_trials=PARALLEL, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(Path(folder, "tune")), verbose=0),
    )
    results = tuner.fit()
    if results.num_errors:
        raise RuntimeError(f"Ray Tune: {results.num_errors} of {len(configs)} trials failed: {results.errors}")
