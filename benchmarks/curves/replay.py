"""Replay searches on the recorded curves (PROTOCOL.md): the tuning phase chooses hpo's defaults on the tuning
tasks, the claim phase measures them against the anchors on the claim tasks. Results go to
``results/<phase>.json`` with the commit, the seeds and every raw number; ``report`` renders them.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.curves import arms as arms_mod
from benchmarks.curves import data, sim, stats, tasks

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.25, 0.5, 1.0)
N_TRIALS = 20
WORKERS = 4
TUNING_SEEDS = tuple(range(0, 30))
CLAIM_SEEDS = tuple(range(1000, 1050))
SAMPLER_CANDIDATES = ("hpo-nopruning", "hpo-tpe10-nopruning", "hpo-gp-nopruning", "hpo-random-nopruning")
PRUNER_CANDIDATES = (
    "hpo-median",
    "hpo-median-w3",
    "hpo-sh",
    "hpo-hyperband",
    "hpo-asha3",
    "hpo-asha2",
    "hpo-nopruning",
)
CURRENT_SAMPLER, CURRENT_PRUNER = "hpo-nopruning", "hpo-median"
FIXED_ARMS = (*SAMPLER_CANDIDATES, "hpo-default")


def default_arm() -> arms_mod.HpoArm:
    """hpo's defaults as a sweep config gets them (sampler, start-up, pruner with the head-only warm-up), for
    the benchmark's training settings: whatever ``hpo.config`` says now."""
    from hpo.config import SweepConfig

    cfg = SweepConfig.model_validate({"train": {"epochs": tasks.EPOCHS, "freeze_backbone_epochs": tasks.FREEZE}})
    rule = cfg.pruner.rule()
    return arms_mod.HpoArm("hpo-default", sampler=cfg.study.sampler.name, rule=rule)


ANCHORS = (
    "optuna-tpe-median",
    "optuna-tpe-hyperband",
    "random",
    "syne-asha",
    "syne-hyperband",
    "syne-bohb",
    "syne-random",
    "ray-tune-asha",
)


def phase_arms(phase: str) -> tuple[str, ...]:
    """The arms a phase runs: the candidates on the tuning tasks; hpo's defaults, no pruning and the anchors
    that can run here on the claim tasks."""
    if phase == "tuning":
        return tuple(dict.fromkeys((*SAMPLER_CANDIDATES, *PRUNER_CANDIDATES)))
    available = all_arms()
    return ("hpo-default", "hpo-nopruning", *(a for a in ANCHORS if a in available))


def all_arms() -> dict[str, Any]:
    return {**arms_mod.hpo_arms(), **arms_mod.optuna_anchors(), **_syne_arms(), "hpo-default": default_arm()}


def _syne_arms() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        from benchmarks.curves import syne

        out.update(syne.anchors())
    except ImportError:
        pass
    try:
        from benchmarks.curves.tune import TuneAshaArm

        out["ray-tune-asha"] = TuneAshaArm()
    except ImportError:
        pass
    return out


def run(curves: data.TaskCurves, arm: Any, seed: int, n_trials: int | None, max_compute: float | None) -> sim.Trace:
    searcher = arm.searcher(seed, n_trials, curves.epochs, WORKERS)
    return sim.replay(curves, searcher, seed=seed, workers=WORKERS, max_compute=max_compute)


def one_seed(
    task: str, seed: int, arm_names: Sequence[str], curves: data.TaskCurves | None = None, n_trials: int = N_TRIALS
) -> dict[str, Any]:
    """Every arm on one task and replay seed: at ``n_trials`` trials, and anytime up to the budget B (the
    compute of ``hpo-nopruning`` at ``n_trials``)."""
    curves = curves or data.load(task)
    arms = all_arms()
    ref = run(curves, arms["hpo-nopruning"], seed, n_trials, None)
    budget = ref.compute
    out: dict[str, Any] = {"budget": budget, "arms": {}}
    for name in arm_names:
        t0 = time.perf_counter()
        entry: dict[str, Any] = {}
        if name in FIXED_ARMS:  # at N_TRIALS trials (G1, the sampler's choice)
            fixed = ref if name == "hpo-nopruning" else run(curves, arms[name], seed, n_trials, None)
            entry.update(
                fixed_regret=curves.oracle_test - fixed.test_at(float("inf"), curves.random_test),
                fixed_compute=fixed.compute,
                fixed_trials=fixed.trials,
            )
        if name not in SAMPLER_CANDIDATES or name in PRUNER_CANDIDATES:  # anytime, up to B (G2, the pruner's)
            anytime = run(curves, arms[name], seed, None, budget)
            entry.update(
                anytime_regret=[
                    curves.oracle_test - anytime.test_at(f * budget, curves.random_test) for f in FRACTIONS
                ],
                anytime_trials=anytime.trials,
                anytime_compute=anytime.compute,
            )
        out["arms"][name] = {**entry, "seconds": time.perf_counter() - t0}
    return out


def measure(phase: str, task_names: Sequence[str], seeds: Sequence[int], arm_names: Sequence[str], jobs: int) -> dict:
    raw: dict[str, dict[str, Any]] = {t: {} for t in task_names}
    work = [(t, s) for t in task_names for s in seeds]
    with ProcessPoolExecutor(jobs) as pool:
        futures = {(t, s): pool.submit(one_seed, t, s, arm_names) for t, s in work}
        for n, ((t, s), f) in enumerate(futures.items(), start=1):
            raw[t][str(s)] = f.result()
            print(f"{phase}: {n}/{len(work)} {t} seed {s}", file=sys.stderr, flush=True)
    arms = all_arms()
    return {
        "phase": phase,
        "protocol": "benchmarks/curves/PROTOCOL.md v1",
        "commit": _commit(),
        "curves": json.loads((data.DATA / "meta.json").read_text()),
        "tasks": {t: _task_info(t) for t in task_names},
        "seeds": list(seeds),
        "workers": WORKERS,
        "n_trials": N_TRIALS,
        "fractions": list(FRACTIONS),
        "arms": {n: _arm_settings(arms[n]) for n in arm_names},
        "raw": raw,
    }


def _task_info(task: str) -> dict[str, Any]:
    c = data.load(task)
    return {
        "configs": len(c.runs),
        "runs": sum(len(r) for r in c.runs.values()),
        "n_val": c.n_val,
        "oracle_test": c.oracle_test,
        "random_test": c.random_test,
        "surrogate": surrogate_error(c),
    }


def _arm_settings(arm: Any) -> dict[str, Any]:
    if isinstance(arm, arms_mod.HpoArm):
        return {"sampler": arm.sampler, "startup": arm.startup or "hpo default", "rule": repr(arm.rule)}
    return dict(getattr(arm, "settings", {}))


def _commit() -> str:
    from benchmarks.curves.record import git

    # code only: curves still being recorded (untracked data files) do not make a replay's code dirty
    code = ("hpo", "trials", "benchmarks/curves/*.py")
    return git("rev-parse", "HEAD") + (
        "-dirty" if git("status", "--porcelain", "--untracked-files=no", "--", *code) else ""
    )


def surrogate_error(c: data.TaskCurves) -> dict[str, float]:
    """Leave-one-config-out: the nearest other config's delivered test accuracy against the config's own
    (mean absolute error, pp), beside the seed-to-seed spread (mean |seed 0 - seed 1|, pp)."""
    errors = [abs(c.config_test[c.nearest(c.params[k], exclude=k)] - c.config_test[k]) for k in c.runs]
    spreads = [abs(c.delivered(r[0])[1] - c.delivered(r[1])[1]) for r in c.runs.values() if len(r) > 1]
    return {
        "nearest_mae_pp": 100 * statistics.fmean(errors),
        "seed_spread_pp": 100 * statistics.fmean(spreads) if spreads else float("nan"),
        "configs": len(errors),
        "seeded": len(spreads),
    }


# ------------------------------------------------------------------------------------------------ summaries


def pooled(raw: dict[str, dict[str, Any]], arm: str, key: str, index: int | None = None) -> list[float]:
    """Per seed, the mean over tasks of ``arm``'s ``key`` (an element of it when ``index`` is given)."""
    tasks_ = list(raw)
    seeds = list(raw[tasks_[0]])
    out = []
    for s in seeds:
        vals = [raw[t][s]["arms"][arm][key] for t in tasks_]
        out.append(statistics.fmean(v[index] if index is not None else v for v in vals))
    return out


def anytime_score(raw: dict[str, dict[str, Any]], arm: str) -> list[float]:
    return [statistics.fmean(x) for x in zip(*(pooled(raw, arm, "anytime_regret", i) for i in range(3)), strict=True)]


def choose(scores: dict[str, list[float]], current: str) -> dict[str, Any]:
    """PROTOCOL.md section 5: keep ``current`` unless another's paired interval (its score - current's) is wholly
    below zero; among those, the lowest mean."""
    table = {n: stats.paired(v, scores[current]).as_dict() for n, v in scores.items()}
    better = [n for n, t in table.items() if n != current and t["high"] < 0]
    chosen = min(better, key=lambda n: table[n]["mean"]) if better else current
    return {"chosen": chosen, "vs_current": table, "mean": {n: statistics.fmean(v) for n, v in scores.items()}}


def tuning_summary(result: dict[str, Any]) -> dict[str, Any]:
    raw = result["raw"]
    samplers = {n: pooled(raw, n, "fixed_regret") for n in SAMPLER_CANDIDATES if n in result["arms"]}
    pruners = {n: anytime_score(raw, n) for n in PRUNER_CANDIDATES if n in result["arms"]}
    return {"sampler": choose(samplers, CURRENT_SAMPLER), "pruner": choose(pruners, CURRENT_PRUNER)}


def claim_summary(result: dict[str, Any], anchors: Sequence[str]) -> dict[str, Any]:
    raw = result["raw"]
    out: dict[str, Any] = {"per_task": {}, "pooled": {}}
    for scope, sub in [("pooled", raw), *((t, {t: raw[t]}) for t in raw)]:
        test_gap = stats.paired(  # regrets: nopruning's - default's = default's test - nopruning's
            [-100 * x for x in pooled(sub, "hpo-default", "fixed_regret")],
            [-100 * x for x in pooled(sub, "hpo-nopruning", "fixed_regret")],
        )
        ratios = [
            d / n
            for d, n in zip(
                pooled(sub, "hpo-default", "fixed_compute"), pooled(sub, "hpo-nopruning", "fixed_compute"), strict=True
            )
        ]
        ratio = stats.interval(ratios)
        g1 = {
            "test_gap_pp": test_gap.as_dict(),
            "compute_ratio": ratio.as_dict(),
            "passed": test_gap.low >= -0.3 and ratio.high <= 0.5,
        }
        g2: dict[str, Any] = {}
        for a in anchors:
            rows = []
            for i, f in enumerate(FRACTIONS):
                p = stats.paired(
                    [100 * x for x in pooled(sub, a, "anytime_regret", i)],
                    [100 * x for x in pooled(sub, "hpo-default", "anytime_regret", i)],
                )
                rows.append({"fraction": f, **p.as_dict(), "verdict": p.verdict("above")})
            g2[a] = rows
        entry = {"G1": g1, "G2": g2, "G2_passed": all(r["verdict"] == "win" for rows in g2.values() for r in rows)}
        if scope == "pooled":
            out["pooled"] = entry
        else:
            out["per_task"][scope] = entry
    return out


def write(result: dict[str, Any], name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return path
