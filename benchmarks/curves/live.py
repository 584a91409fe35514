"""The live check (``LIVE-PROTOCOL.md``): real sweeps of hpo's defaults and of Ray Tune's ASHA on two claim
tasks, compared with the replay of the same two arms at the same setting.

``python -m benchmarks.curves live`` runs the (task, seed, arm) cells not yet in ``results/live_runs.jsonl``
(resumable: one line per finished cell, with the commit it ran on), then writes ``results/live.json``: the
replay at the same setting, the paired differences and the verdict. ``report`` renders it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import p5_search
from benchmarks.curves import data, sim, stats, tasks
from benchmarks.p5_search import TrialRecord as Trial

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "live_runs.jsonl"
SUMMARY = RESULTS / "live.json"
TASKS = ("digits59-few", "patches")
SEEDS = tuple(range(2000, 2005))
ARMS = ("hpo-default", "ray-tune-asha")
N_TRIALS = 20
PARALLEL = 2
REPLAY_SEEDS = tuple(range(1000, 1050))


def final_test(trials: Sequence[Trial]) -> float | None:
    """The test accuracy of the finished trial with the best val (the earliest on ties); None if none finished."""
    done = [t for t in trials if t.test is not None]
    return p5_search.final_test(done, math.nan) if done else None


# ------------------------------------------------------------------------------------------ the arms
def _train(task: tasks.Task, seed: int, epochs: int) -> dict[str, Any]:
    """The task's recording config with the sweep's default early stopping (the key left out)."""
    train = task.train_config({}, seed, epochs)
    del train["early_stopping"]
    return train


def hpo_run(url: str, task: tasks.Task, seed: int, workdir: str, n_trials: int, epochs: int) -> list[Trial]:
    import optuna
    import yaml
    from optuna.trial import TrialState

    from benchmarks.sweeps import run_hpo
    from hpo.config import load_sweep_config

    name = f"live-{task.name}-{seed}"
    doc = {
        "study": {"name": name, "n_trials": n_trials, "sampler": {"seed": seed}},
        "resources": {"cpus_per_trial": 1},
        "parallel": PARALLEL,
        "train": _train(task, seed, epochs),
    }
    path = Path(workdir) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    run_hpo(load_sweep_config(path, storage=url, output_dir=str(Path(workdir) / "runs")), p5_search.hpo_workload)
    out = []
    for t in optuna.load_study(study_name=name, storage=url).get_trials():
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        curve = list(t.intermediate_values.values())
        test = (t.user_attrs.get("metrics") or {}).get("test_acc") if t.state == TrialState.COMPLETE else None
        finished = t.datetime_complete.timestamp() if t.datetime_complete else math.inf
        val = t.value if t.state == TrialState.COMPLETE and t.value is not None else max(curve, default=math.nan)
        out.append(Trial(finished, len(curve), float(val), None if test is None else float(test)))
    return out


def _tune_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    base = config["__train__"]
    epochs = int(base["epochs"])
    last: dict[str, float] = {}

    def reporter(epoch: int, metrics: Mapping[str, Any]) -> str:
        last.update(epoch=float(epoch), val_acc=float(metrics["val_acc"]))
        if epoch < epochs:  # the last epoch is reported once, with the test accuracy, after fit returns
            tune.report({"epoch": epoch, "val_acc": last["val_acc"], "wall": time.time()})
        return "continue"

    params = {k: v for k, v in config.items() if k != "__train__"}
    summary = p5_search._fit_and_test({**base, **params}, reporter)
    best = summary["best_metrics"]
    # an early-stopped trial repeats its last epoch here: ASHA has recorded it at any rung already, and goes on
    tune.report(
        {
            "epoch": int(last["epoch"]),
            "val_acc": last["val_acc"],
            "wall": time.time(),
            "best_val": float(best["val_acc"]),
            "test_acc": float(best["test_acc"]),
        }
    )


def tune_run(task: tasks.Task, seed: int, n_trials: int, epochs: int) -> list[Trial]:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from benchmarks.curves.tune import GRACE, MAX_T, param_space

    scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=MAX_T, grace_period=GRACE)
    tuner = tune.Tuner(
        tune.with_resources(_tune_trainable, {"cpu": 1}),
        param_space={**param_space(), "__train__": _train(task, seed, epochs)},
        tune_config=tune.TuneConfig(
            num_samples=n_trials,
            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=PARALLEL),
            scheduler=scheduler,
        ),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="hpo-bench-live-tune-"), verbose=0),
    )
    return p5_search.tune_records(tuner.fit())


# ------------------------------------------------------------------------------------------ the run
def _commit() -> str:
    from benchmarks.curves.replay import _commit as commit

    return commit()


def done_cells(path: Path = RUNS) -> dict[tuple[str, int, str], dict[str, Any]]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[(row["task"], int(row["seed"]), row["arm"])] = row
    return out


def cells(task_names: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int, str]]:
    """The protocol's order: task by task, seed by seed, both arms of a seed together."""
    return [(t, s, a) for t in task_names for s in seeds for a in ARMS]


def record(
    admin_url: str,
    task_names: Sequence[str] = TASKS,
    seeds: Sequence[int] = SEEDS,
    *,
    n_trials: int = N_TRIALS,
    epochs: int = tasks.EPOCHS,
    deadline: float | None = None,
    path: Path = RUNS,
) -> int:
    """Run the missing cells in order, appending each to ``path``; stop before a seed that would start past
    ``deadline`` (a ``time.time()``). Returns the number of cells run."""
    from benchmarks.common import fresh_database, quiet_optuna, ray_cluster

    quiet_optuna()
    have = done_cells(path)
    todo = [c for c in cells(task_names, seeds) if c not in have]
    commit = _commit()
    ran = 0
    with ray_cluster(PARALLEL):
        for task_name, seed, arm in todo:
            if deadline is not None and time.time() > deadline:
                print(f"live: deadline reached, {len(todo) - ran} cells left", file=sys.stderr)
                break
            task = tasks.task(task_name)
            t0 = time.perf_counter()
            if arm == "hpo-default":
                with (
                    tempfile.TemporaryDirectory(prefix="hpo-bench-live-") as wd,
                    fresh_database(admin_url, "live") as url,
                ):
                    trials = hpo_run(url, task, seed, wd, n_trials, epochs)
            else:
                trials = tune_run(task, seed, n_trials, epochs)
            wall = time.perf_counter() - t0
            row = {
                "task": task_name,
                "seed": seed,
                "arm": arm,
                "commit": commit,
                "n_trials": n_trials,
                "epochs": epochs,
                "parallel": PARALLEL,
                "wall_s": wall,
                "final_test": final_test(trials),
                "trials": [asdict(t) for t in trials],
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            ran += 1
            print(f"live: {task_name} seed {seed} {arm}: final test {row['final_test']}, {wall:.0f} s", file=sys.stderr)
    return ran


# ------------------------------------------------------------------------------------------ the verdict
def replay_same(task_name: str, seeds: Sequence[int] = REPLAY_SEEDS, n_trials: int = N_TRIALS) -> list[float]:
    """d (pp) per replay seed: hpo's defaults minus Tune's ASHA, final test accuracy at ``n_trials``, 2 workers."""
    from benchmarks.curves import replay, tune

    curves = data.load(task_name)
    hpo_arm, tune_arm = replay.default_arm(), tune.TuneAshaArm()
    out = []
    for seed in seeds:
        finals = []
        for arm in (hpo_arm, tune_arm):
            searcher = arm.searcher(seed, n_trials, curves.epochs, PARALLEL)
            trace = sim.replay(curves, searcher, seed=seed, workers=PARALLEL)
            finals.append(trace.test_at(float("inf"), curves.random_test))
        out.append(100 * (finals[0] - finals[1]))
    return out


def live_diffs(rows: Mapping[tuple[str, int, str], Mapping[str, Any]], task_name: str) -> dict[int, float]:
    """d (pp) per seed with both arms done and a finished trial in each."""
    out = {}
    for (t, seed, arm), row in rows.items():
        if t != task_name or arm != ARMS[0]:
            continue
        other = rows.get((t, seed, ARMS[1]))
        if other is None or row["final_test"] is None or other["final_test"] is None:
            continue
        out[seed] = 100 * (row["final_test"] - other["final_test"])
    return dict(sorted(out.items()))


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def summarize(rows: Mapping[tuple[str, int, str], Mapping[str, Any]], replay: Mapping[str, list[float]]) -> dict:
    """Per task and pooled: the live and replayed d with their intervals, and the protocol's verdict."""
    per_task: dict[str, Any] = {}
    live = {t: live_diffs(rows, t) for t in replay}

    def total(t: str, arm: str, of: Callable[[Mapping[str, Any]], float]) -> float:
        return sum(of(r) for (task, _, a), r in rows.items() if task == t and a == arm)

    for t, diffs in live.items():
        per_task[t] = {
            "live_seeds": list(diffs),
            "live": stats.interval(list(diffs.values())).as_dict() if diffs else None,
            "replay": stats.interval(replay[t]).as_dict(),
            "live_wall_s": {
                arm: sum(r["wall_s"] for (tt, _, a), r in rows.items() if tt == t and a == arm) for arm in ARMS
            },
            "live_epochs": {
                arm: sum(
                    sum(x["epochs"] for x in r["trials"]) for (tt, _, a), r in rows.items() if tt == t and a == arm
                )
                for arm in ARMS
            },
        }
    common = sorted(set.intersection(*(set(d) for d in live.values()))) if live else []
    pooled_live = [sum(live[t][s] for t in live) / len(live) for s in common]
    n_replay = min(len(v) for v in replay.values())
    pooled_replay = [sum(replay[t][i] for t in replay) / len(replay) for i in range(n_replay)]
    live_i = stats.interval(pooled_live) if pooled_live else None
    replay_i = stats.interval(pooled_replay)
    complete = all(len(d) >= len(SEEDS) for d in live.values())
    agree = live_i is not None and _sign(live_i.mean) != 0 and _sign(live_i.mean) == _sign(replay_i.mean)
    verdict = "PASS" if agree and complete else "incomplete" if agree else "FAIL"
    return {
        "per_task": per_task,
        "pooled": {
            "seeds": common,
            "live": live_i.as_dict() if live_i else None,
            "live_call": live_i.verdict() if live_i else None,
            "replay": replay_i.as_dict(),
            "replay_call": replay_i.verdict(),
        },
        "signs_agree": agree,
        "complete": complete,
        "verdict": verdict,
    }


def write_summary(path: Path = RUNS, out: Path = SUMMARY, replay_seeds: Sequence[int] = REPLAY_SEEDS) -> Path:
    rows = done_cells(path)
    replay = {t: replay_same(t, replay_seeds) for t in TASKS}
    result = {
        "protocol": "benchmarks/curves/LIVE-PROTOCOL.md",
        "commit": _commit(),
        "runs": str(path.relative_to(RESULTS.parent)) if path.is_relative_to(RESULTS.parent) else str(path),
        "run_commits": sorted({r["commit"] for r in rows.values()}),
        "tasks": list(TASKS),
        "seeds": list(SEEDS),
        "n_trials": N_TRIALS,
        "parallel": PARALLEL,
        "replay_seeds": list(replay_seeds),
        "arms": {
            "hpo-default": "hpo sweep with hpo's defaults (sampler seeded), 20 trials, 2 at a time",
            "ray-tune-asha": "Tuner + ASHAScheduler(time_attr='epoch', max_t=12, grace_period=2, reduction 4), "
            "BasicVariantGenerator(random_state=seed, max_concurrent=2), num_samples=20",
        },
        **summarize(rows, replay),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return out
