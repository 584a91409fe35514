"""P8: useful-work fraction of a real sweep: time inside training and evaluation steps over wall x slots.

The quickstart's workload (examples/quickstart.yaml: ResNet-18 pretrained on digits 0-4, fine-tuned on
digits 5-9, 6 epochs, 1 CPU per trial, 2 slots), with pruning and early stopping off so that both sides train
the same trials for the same epochs: a fixed list of trials (seeded random draws from the quickstart's search
space) is enqueued in hpo's study and handed to Ray Tune as a grid over the same list.

- hpo: ``run_sweep`` (the whole call: study set-up, coordinator, trials), the workload ``trials.fit`` through
  ``hpo.cluster.worker.train_workload`` plus a timing file per trial.
- Ray Tune: ``Tuner.fit`` with ``reuse_actors=True`` (Tune's advice for short trials), no scheduler (FIFO; no
  ASHA), ``max_concurrent_trials=2``, 1 CPU per trial, the same warm Ray; the trainable runs the same
  ``trials.fit`` with the same checkpoint directory per trial and calls ``tune.report`` after every epoch.

Useful work: the training steps (forward, backward, optimizer) and the validation forward passes, from
``fit``'s own timings (an epoch's time less the time spent waiting for batches), summed over trials. The rest of
wall x slots is broken down from the timings recorded inside ``fit``, by the trial task and by the driver; what
none of them covers is shown as the remainder (for hpo: study set-up, coordinator start, asks and tells, idle
slots at the start and the end; for Tune: its set-up, actor start and reset, scheduling and result handling).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

# Imported with this module, so that hpo's worker warm-up (which unpickles the workload, importing its module)
# imports the training stack as it does for hpo's default workload, and Tune's actors import it when they start.
import trials.train  # noqa: F401
from benchmarks.common import (
    REPO,
    TUNE_MISSING,
    Comparison,
    Result,
    Row,
    fresh_database,
    interleaved,
    median,
    quiet_optuna,
    ray_cluster,
    secs,
    tune_available,
)

GOAL = 0.90
#: A full run: 5 interleaved pairs of sweeps of FULL_TRIALS trials x 6 epochs. At 24 trials a sweep takes about
#: 5 minutes per side on 2 cores (5 pairs: some 52 minutes); 12 trials keep the 5 repeats within half an hour.
#: Fewer trials weigh the fixed costs (worker start, the idle slot at the end) more, against hpo as against Tune.
FULL_REPEATS = 5
FULL_TRIALS = 12
SLOTS = 2
CPUS_PER_TRIAL = 1
QUICKSTART = REPO / "examples" / "quickstart.yaml"
PRETRAINED = Path("~/.cache/hpo/pretrained/resnet18-digits04/model.pt").expanduser()
PRETRAIN_COMMAND = (
    ".venv/bin/hpo train examples/pretrain_digits04.yaml --output ~/.cache/hpo/pretrained/resnet18-digits04/"
)
TIMING_FILE = "p8_timing.json"

#: The parts of wall x slots, in the order the table shows them. "useful" is the steps.
PARTS: dict[str, str] = {
    "useful": "training and validation steps (useful work)",
    "data": "waiting for batches (per-sample augmentation in the trial's process)",
    "dataset": "dataset build (splits; decoded data cached per process)",
    "model": "model build and weight load",
    "checkpoint": "checkpoint writes (after an epoch once train.checkpoint_every_s, 30 s, has passed)",
    "report": "per-epoch reports (hpo: coordinator round trip and study write; Tune: tune.report)",
    "fit_other": "rest of fit (optimizer, loaders, seeding, best weights restored)",
    "imports": "imports inside the trial",
    "task": "trial task around fit (hpo: worker start-up handshake with the coordinator, summary)",
    "worker_start": "waiting for a new worker (process start, imports): a worker's first trial",
    "dispatch": "dispatch and queueing (submission to the task's start)",
    "remainder": "unattributed: set-up, scheduling, hand-overs between trials, idle slots at start and end",
}


# ---------------------------------------------------------------------------------------------------
# The workload, the same on both sides


def quickstart() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(QUICKSTART.read_text())
    return data


def train_config(weights: str | None = None) -> dict[str, Any]:
    """The quickstart's training config with early stopping off (every trial runs all its epochs); ``weights``
    in place of its pretrained backbone (tests pass a smaller one)."""
    train = dict(quickstart()["train"])
    train["early_stopping"] = {"patience": None}
    if weights is not None:
        train["weights"] = weights
    return train


def trial_params(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` fixed trials: seeded random draws from the quickstart's search space (its lr, batch_size and
    aug_strength ranges, hpo's default ranges for dropout and weight_decay)."""
    from hpo.space import DEFAULT_SPACE

    space = {**DEFAULT_SPACE, **quickstart()["search_space"]}
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        params: dict[str, Any] = {}
        for name, spec in space.items():
            if isinstance(spec, list):
                params[name] = rng.choice(spec)
            elif spec.get("log"):
                lo, hi = float(spec["low"]), float(spec["high"])
                params[name] = lo * (hi / lo) ** rng.random()
            else:
                params[name] = rng.uniform(float(spec["low"]), float(spec["high"]))
        out.append(params)
    return out


def _fit_recorded(config: dict[str, Any], reporter: Any, checkpoint_dir: str, timing_path: Path) -> dict[str, Any]:
    entered = time.time()
    t0 = time.perf_counter()
    from hpo.cluster.worker import train_workload  # imports torch and trials on a cold process

    import_s = time.perf_counter() - t0
    summary = train_workload(config, reporter, checkpoint_dir, num_threads=CPUS_PER_TRIAL)
    record = {
        "entered_at": entered,
        "exited_at": time.time(),
        "pid": os.getpid(),
        "import_s": import_s,
        "timings": summary["timings"],
        "epochs_run": summary["epochs_run"],
    }
    timing_path.write_text(json.dumps(record))
    return summary


def hpo_workload(config: dict[str, Any], reporter: Any, checkpoint_dir: str, *, num_threads: int | None) -> Any:
    """hpo's default workload (``train_workload``: ``trials.fit``), plus a timing file in the trial's folder."""
    return _fit_recorded(config, reporter, checkpoint_dir, Path(checkpoint_dir, TIMING_FILE))


def tune_trainable(config: dict[str, Any]) -> None:
    """Ray Tune's function trainable: the same ``trials.fit`` on trial ``config["index"]``'s config, reporting
    every epoch with ``tune.report``."""
    from ray import tune

    index = int(config["index"])
    train = {**config["base"], **config["trials"][index]}
    checkpoint_dir = Path(config["timing_dir"], f"tune-{index:03d}")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def reporter(epoch: int, metrics: Mapping[str, float]) -> str:
        tune.report({"epoch": epoch, **metrics})
        return "continue"

    _fit_recorded(train, reporter, str(checkpoint_dir), checkpoint_dir / TIMING_FILE)


# ---------------------------------------------------------------------------------------------------
# One sweep per side


def run_hpo_sweep(
    url: str, name: str, trials: list[dict[str, Any]], workdir: Path, base: dict[str, Any]
) -> dict[str, Any]:
    """One hpo sweep of ``trials`` (enqueued in that order); its wall time and per-trial records."""
    import optuna

    from hpo import study as studies
    from hpo.config import load_sweep_config
    from hpo.sweep import run_sweep
    from storage import opened

    qs = quickstart()
    data = {
        "study": {"name": name, "metric": "val_acc", "n_trials": len(trials), "sampler": {"name": "random", "seed": 0}},
        "search_space": qs["search_space"],
        "pruner": "none",
        "resources": {"cpus_per_trial": CPUS_PER_TRIAL, "gpus_per_trial": 0},
        "parallel": SLOTS,
        "max_failures": 0,
        "train": {k: v for k, v in base.items() if k != "early_stopping"},
        "early_stopping": {"patience": None},  # hpo sets it for every trial from here
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_sweep_config(path, storage=url, output_dir=str(workdir / "runs"))
    with opened(url, create_schema=True) as storage:
        study = studies.create_or_load(storage, name, directions=cfg.directions)
        for params in trials:
            study.enqueue_trial(params)
    start = time.perf_counter()
    result = run_sweep(cfg, workload=hpo_workload, check_data=False, handle_sigint=False)
    wall = time.perf_counter() - start
    if result.exit_code != 0:
        raise RuntimeError(f"hpo sweep {name} ended with {result.stopped} (exit {result.exit_code})")
    records = []
    done = optuna.load_study(study_name=name, storage=url).get_trials()
    for t in sorted(done, key=lambda t: t.number):
        record = json.loads(Path(t.user_attrs["checkpoint_dir"], TIMING_FILE).read_text())
        record["queued_s"] = float(t.user_attrs.get(studies.ATTR_QUEUED, 0.0))
        record["duration_s"] = float(t.user_attrs.get(studies.ATTR_DURATION, 0.0))
        record["params"] = {k: t.params[k] for k in sorted(t.params)}
        records.append(record)
    return {"wall_s": wall, "trials": records}


def run_tune_sweep(trials: list[dict[str, Any]], workdir: Path, base: dict[str, Any]) -> dict[str, Any]:
    """One Ray Tune experiment over the same ``trials`` on the Ray already running."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    from ray import tune

    timing_dir = workdir / "tune-trials"
    timing_dir.mkdir(parents=True, exist_ok=True)
    param_space = {
        "index": tune.grid_search(list(range(len(trials)))),
        "trials": trials,
        "base": base,
        "timing_dir": str(timing_dir),
    }
    start = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, {"cpu": CPUS_PER_TRIAL}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_acc", mode="max", max_concurrent_trials=SLOTS, reuse_actors=True
        ),  # no scheduler: FIFO, every trial runs all its epochs
        run_config=tune.RunConfig(storage_path=str(workdir / "tune"), verbose=0),
    )
    results = tuner.fit()
    wall = time.perf_counter() - start
    if results.num_errors:
        raise RuntimeError(f"Ray Tune: {results.num_errors} trials failed")
    records = [json.loads((timing_dir / f"tune-{i:03d}" / TIMING_FILE).read_text()) for i in range(len(trials))]
    return {"wall_s": wall, "trials": records}


# ---------------------------------------------------------------------------------------------------
# The accounting (pure)


def breakdown(wall_s: float, records: list[dict[str, Any]], slots: int = SLOTS) -> dict[str, float]:
    """Each part of ``PARTS`` as a fraction of wall x slots (they sum to 1; the remainder is what no timing
    covers). A record: ``fit``'s ``timings``, ``entered_at``/``exited_at`` of the workload, ``import_s``, and
    for hpo ``queued_s`` and ``duration_s`` of the trial task and ``pid`` of its worker."""
    total = wall_s * slots
    parts = dict.fromkeys(PARTS, 0.0)
    seen_pids: set[int] = set()
    for r in sorted(records, key=lambda r: r["entered_at"]):
        t = r["timings"]
        data = t.get("train_data_s", 0.0) + t.get("eval_data_s", 0.0)
        steps = t["train_s"] + t["eval_s"] - data
        named = {
            "useful": steps,
            "data": data,
            "dataset": t.get("dataset_s", 0.0),
            "model": t.get("model_s", 0.0),
            "checkpoint": t.get("checkpoint_s", 0.0),
            "report": t.get("report_s", 0.0),
        }
        for key, value in named.items():
            parts[key] += value
        parts["fit_other"] += t["total_s"] - sum(named.values())
        parts["imports"] += r.get("import_s", 0.0)
        in_workload = r["exited_at"] - r["entered_at"]
        parts["task"] += in_workload - t["total_s"] - r.get("import_s", 0.0)
        if "duration_s" in r:  # hpo: the trial task's own time around the workload, and its queueing
            parts["task"] += max(0.0, r["duration_s"] - in_workload)
            first_on_worker = r["pid"] not in seen_pids
            parts["worker_start" if first_on_worker else "dispatch"] += r.get("queued_s", 0.0)
        seen_pids.add(r["pid"])
    parts["remainder"] = total - sum(parts.values())
    return {k: v / total for k, v in parts.items()}


# ---------------------------------------------------------------------------------------------------
# The benchmark


def ensure_pretrained() -> None:
    if not PRETRAINED.is_file():
        raise RuntimeError(
            f"the quickstart's pretrained backbone {PRETRAINED} is missing: make it with {PRETRAIN_COMMAND}"
        )


def run(
    admin_url: str,
    quick: bool = False,
    *,
    repeats: int | None = None,
    n_trials: int | None = None,
    weights: str | None = None,
    epochs: int | None = None,
) -> Result:
    """P8 (``quick``: 6 trials, one sweep per side). ``weights`` replaces the quickstart's pretrained backbone
    (which must exist otherwise: ``PRETRAIN_COMMAND`` makes it); ``epochs`` its 6 epochs (tests: fewer)."""
    quiet_optuna()
    if weights is None:
        ensure_pretrained()
    n = n_trials or (6 if quick else FULL_TRIALS)
    reps = repeats or (1 if quick else FULL_REPEATS)
    trials = trial_params(n)
    base = train_config(weights)
    if epochs is not None:
        base["epochs"] = epochs
    epochs = int(base["epochs"])
    result = Result("P8", f"Useful-work fraction of a real sweep ({n} quickstart trials x {epochs} epochs, 2 slots)")
    result.settings = {
        "n_trials": n,
        "epochs": epochs,
        "parallel": SLOTS,
        "cpus_per_trial": CPUS_PER_TRIAL,
        "pruner": "none",
        "early_stopping": None,
        "workload": "examples/quickstart.yaml (resnet18 pretrained on digits 0-4, fine-tuned on 5-9)",
        "repeats": reps,
        "mode": "quick" if quick else "full",
    }
    if not tune_available():
        result.notes.append(f"Ray Tune baseline not run: {TUNE_MISSING}.")
    result.baselines = {
        "ray_tune": {
            "reuse_actors": True,
            "scheduler": "FIFO (none; no ASHA)",
            "max_concurrent_trials": SLOTS,
            "resources_per_trial": {"cpu": CPUS_PER_TRIAL},
            "trainable": "function trainable running trials.fit, tune.report per epoch",
        }
    }
    runs: dict[str, list[dict[str, Any]]] = {"hpo": [], "ray_tune": []}
    root = Path(tempfile.mkdtemp(prefix="hpo-bench-p8-"))
    with ray_cluster(), fresh_database(admin_url, "p8") as url:

        def side(name: str, go: Callable[[Path], dict[str, Any]]) -> Callable[[], float]:
            def once() -> float:
                workdir = root / f"{name}-{len(runs[name])}"
                workdir.mkdir()
                out = go(workdir)
                out["fractions"] = breakdown(out["wall_s"], out["trials"])
                runs[name].append(out)
                return out["fractions"]["useful"]

            return once

        hpo_side = side("hpo", lambda d: run_hpo_sweep(url, f"p8-{d.name}", trials, d, base))
        if tune_available():
            comparison = interleaved(hpo_side, side("ray_tune", lambda d: run_tune_sweep(trials, d, base)), reps)
        else:
            comparison = Comparison([hpo_side() for _ in range(reps)], [])
    _report(result, comparison, runs, trials)
    return result


def _report(result: Result, comparison: Comparison, runs: dict[str, list[dict[str, Any]]], trials: list[Any]) -> None:
    hpo_frac, tune_frac = median(comparison.hpo), median(comparison.baseline)
    with_tune = bool(comparison.baseline)
    walls = Comparison([r["wall_s"] for r in runs["hpo"]], [r["wall_s"] for r in runs["ray_tune"]])
    result.rows.append(
        Row(
            "useful-work fraction: training + validation steps / (wall x slots), median",
            f"hpo >= {GOAL} and above Ray Tune",
            f"{hpo_frac:.3f}",
            f"{tune_frac:.3f}" if with_tune else "not run",
            comparison.fmt_ratio() if with_tune else "",
            hpo_frac >= GOAL and (not with_tune or comparison.ratio > 1.0),
            comparison=comparison,
        )
    )
    if with_tune:
        result.rows.append(
            Row(
                "sweep wall time (whole call), median",
                "information",
                secs(median(walls.hpo)),
                secs(median(walls.baseline)),
                walls.fmt_ratio(),
                None,
                comparison=walls,
            )
        )
    epochs_h = [r["fractions"]["useful"] + r["fractions"]["data"] for r in runs["hpo"]]
    epochs_b = [r["fractions"]["useful"] + r["fractions"]["data"] for r in runs["ray_tune"]]
    whole = Comparison(epochs_h, epochs_b)
    result.rows.append(
        Row(
            "training epochs including the wait for batches / (wall x slots), median",
            "information",
            f"{median(epochs_h):.3f}",
            f"{median(epochs_b):.3f}" if with_tune else "not run",
            whole.fmt_ratio() if with_tune else "",
            None,
            comparison=whole if with_tune else None,
        )
    )
    parts = {k: median([r["fractions"][k] for r in runs["hpo"]]) for k in PARTS if k != "useful"}  # hpo's medians
    for key, h in parts.items():
        b = median([r["fractions"][key] for r in runs["ray_tune"]]) if with_tune else float("nan")
        result.rows.append(Row(f"of wall x slots: {PARTS[key]}", "information", f"{h:.3f}", f"{b:.3f}", "", None))
    result.raw = {"trials": trials, "runs": runs, "comparison": comparison.as_dict(), "walls": walls.as_dict()}
    first = runs["hpo"][0]["trials"]
    steps_s = sum(r["timings"]["train_s"] + r["timings"]["eval_s"] for r in first) / max(1, len(first))
    result.notes += [
        "Same trials on both sides: a fixed list of seeded random draws from the quickstart's search space, enqueued "
        "in hpo's study and given to Ray Tune as a grid over the same list; pruning and early stopping off, so every "
        f"trial trains all its epochs. One trial's epochs took {secs(steps_s)} (training + validation, first hpo "
        "sweep). Each part is a median over the repeats of its share of wall x slots; the shares of one run sum to 1.",
        "Useful work counts the steps only (forward, backward, optimizer; val forward passes): the time `fit` waited "
        "for batches (per-sample augmentation in the trial's own process: digits are tensors in memory, so "
        "`num_workers: auto` starts no DataLoader worker) is shown apart and is the same work on both sides.",
        "hpo's trial workers are Ray tasks reused across trials and sweeps on a long-lived Ray; Tune starts its two "
        "trainable actors for each `Tuner.fit` (and reuses them across that experiment's trials).",
        f"{len(trials)} trials x {comparison.repeats} repeats rather than the 24 trials first planned: at 24, "
        "5 pairs of sweeps take about 52 minutes on 2 cores. Fewer trials weigh the fixed costs (worker start, "
        "the last trial's idle slot) more, on both sides.",
        "Two changes to `trials` that both sides run, from this benchmark's breakdown: checkpoints after an epoch "
        "once `train.checkpoint_every_s` (30 s) of training has passed, not after every epoch (the quickstart's "
        "epochs take seconds; a per-epoch checkpoint was 0.084 of wall x slots), and ColorJitter leaves saturation "
        "and hue out on grayscale images, where they change nothing (they were 1.2 of the 2.6 ms of augmentation "
        "per 32 px digit).",
    ]
    biggest = max(parts, key=lambda k: parts[k])
    result.notes.append(
        f"hpo's largest part besides useful work: {PARTS[biggest]}, {parts[biggest]:.3f} of wall x slots."
    )
    if result.settings.get("mode") == "full" and comparison.repeats < 5:
        result.notes.append(f"{comparison.repeats} interleaved pair(s) of sweeps, not 5.")
    orchestration = ("imports", "task", "worker_start", "dispatch", "report", "remainder")

    def overhead(side: str) -> float:
        return median([sum(r["fractions"][k] for k in orchestration) for r in runs[side]])

    result.notes.append(
        "Outside `fit`'s own work (imports, the trial task around `fit`, waiting for workers, dispatch, per-epoch "
        f"reports and the unattributed rest): hpo {overhead('hpo'):.3f} of wall x slots"
        + (f", Ray Tune {overhead('ray_tune'):.3f}." if with_tune else ".")
    )
    if hpo_frac < GOAL:
        worst = max((k for k in PARTS if k != "useful"), key=lambda k: median([r["fractions"][k] for r in runs["hpo"]]))
        result.notes.append(
            f"Why the goal is missed: the largest part besides the steps is {PARTS[worst]!r} "
            f"({median([r['fractions'][worst] for r in runs['hpo']]):.3f} of wall x slots)."
        )
