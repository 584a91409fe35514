"""P1: latency of recording one intermediate value and getting the prune decision, against study size, for
each pruner type (median, percentile, successive halving, Hyperband).

Studies with 100, 1,000 and 10,000 COMPLETE trials of 20 steps are bulk-inserted into fresh PostgreSQL
databases (Optuna's own tables and enums, through SQLAlchemy Core: seconds instead of the minutes
``study.add_trials`` takes); for successive halving and Hyperband each trial also carries the
``completed_rung_<i>`` attrs Optuna's pruner writes (its value at every rung it reached). hpo and the
baseline each get their own copy of every study (same name, same content), since successive halving
counts every trial at a rung, the probes too. Then "probe" trials, RUNNING, report 20 steps each:

- hpo: a ``Coordinator`` started on the study (its start-up, which reads the COMPLETE trials once, is
  timed apart), each call ``coordinator.report(trial_id, step, metrics)`` = DB write + decision; and,
  at the largest size, the same through the Ray actor from a Ray task, as a worker sees it.
- baseline: stock Optuna as a worker does it: a fresh ``RDBStorage`` (new process, or new task),
  ``optuna.load_study`` + ``Trial(study, trial_id)``, then ``trial.report`` + ``trial.should_prune()``
  per step. Its first call reads the whole study; the later ones use the storage's cache.

Probe i reports the same values on both paths, so every decision is compared (hpo's rule against
Optuna's pruner on the same data): every replayed round for the median and percentile rules (they read
COMPLETE trials only, and the probes end FAIL), the rounds before the first replay for successive halving
and Hyperband (a probe's rungs count for the next one, on each side alike).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import (
    Result,
    Row,
    fmt_ratio,
    fresh_database,
    median,
    ms,
    percentile,
    quiet_optuna,
    ratio,
    secs,
)
from hpo.coordinator.pruning import HyperbandRule, MedianRule, PercentileRule, PrunerRule, SuccessiveHalvingRule
from storage import close_storage, open_storage

STEPS = 20
#: One rule per type: the median rule at hpo's defaults, the percentile rule alike at the 25th percentile,
#: successive halving and Hyperband at Optuna's defaults (minimum resource / maximum resource "auto").
RULES: dict[str, PrunerRule] = {
    "median": MedianRule(n_startup_trials=5, n_warmup_steps=2),
    "percentile": PercentileRule(percentile=25.0, n_startup_trials=5, n_warmup_steps=2),
    "successive_halving": SuccessiveHalvingRule(),
    "hyperband": HyperbandRule(),
}
RULE = RULES["median"]
OPTUNA_NAMES = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}
METRIC = "val_acc"
GOAL_P95_S = 0.010
GOAL_GROWTH = 2.0
#: Fresh-worker probes of the baseline per study size (at 10,000 trials each one's first call reads the whole
#: study: seconds); hpo replays them round-robin for HPO_ROUNDS probes of 20 reports per size.
N_PROBES = {100: 10, 1_000: 6, 10_000: 4}
HPO_ROUNDS = 20


def _curve(quality: float, step: int, rng: random.Random) -> float:
    return quality * (1.0 - math.exp(-step / 4.0)) + rng.gauss(0.0, 0.01)


RungAttrs = Callable[[int, list[float]], dict[str, float]]


def rung_attrs(rule: PrunerRule, name: str) -> RungAttrs | None:
    """For successive halving and Hyperband: the ``completed_rung_<i>`` attrs a COMPLETE trial of ``STEPS``
    steps has (trial number, its curve from step 1) in study ``name``, as if it had won every rung."""
    if isinstance(rule, SuccessiveHalvingRule):
        # "auto" is Optuna's estimate from the longest COMPLETE trial: these trials' STEPS
        low = rule.min_resource if isinstance(rule.min_resource, int) else max(STEPS // 100, 1)
        rate = rule.min_early_stopping_rate

        def first_rate(number: int) -> int:
            return rate

    elif isinstance(rule, HyperbandRule):
        import optuna

        # the brackets as hpo's state (tested equal to Optuna's) derives them once a trial of STEPS completed
        state = rule.new_state("maximize", name)
        done = optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=0.0, intermediate_values={STEPS: 0.0}
        )
        state.load([done])
        state.initialize()
        low, first_rate = rule.min_resource, state.bracket
    else:
        return None
    eta = rule.reduction_factor

    def attrs(number: int, curve: list[float]) -> dict[str, float]:
        out: dict[str, float] = {}
        rung = 0
        while (step := low * eta ** (first_rate(number) + rung)) <= STEPS:
            out[f"completed_rung_{rung}"] = curve[step - 1]
            rung += 1
        return out

    return attrs


def build_study(url: str, name: str, n_trials: int, seed: int = 0, rungs: RungAttrs | None = None) -> float:
    """Create study ``name`` with ``n_trials`` COMPLETE trials of ``STEPS`` steps (and ``rungs``' system attrs
    on each); returns seconds taken."""
    import optuna
    from optuna.distributions import FloatDistribution, distribution_to_json
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    start = time.perf_counter()
    rng = random.Random(seed)
    storage = open_storage(url, create_schema=True)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study_id = study._study_id
        engine = storage.engine
        dist = distribution_to_json(FloatDistribution(1e-5, 1.0, log=True))
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        finite_iv = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
        finite_v = models.TrialValueModel.TrialValueType.FINITE
        trials_t = models.TrialModel.__table__
        batch = 2000
        with engine.begin() as conn:
            for first in range(0, n_trials, batch):
                numbers = range(first, min(first + batch, n_trials))
                rows = [
                    {
                        "number": n,
                        "study_id": study_id,
                        "state": TrialState.COMPLETE,
                        "datetime_start": now,
                        "datetime_complete": now,
                    }
                    for n in numbers
                ]
                ids = [
                    r[0]
                    for r in conn.execute(
                        trials_t.insert().returning(trials_t.c.trial_id, sort_by_parameter_order=True), rows
                    )
                ]
                ivs, values, params, attrs = [], [], [], []
                for number, tid in zip(numbers, ids, strict=True):
                    quality = rng.uniform(0.2, 0.95)
                    curve = [_curve(quality, s, rng) for s in range(1, STEPS + 1)]
                    if rungs is not None:
                        attrs += [
                            {"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                            for k, v in rungs(number, curve).items()
                        ]
                    ivs += [
                        {"trial_id": tid, "step": s, "intermediate_value": v, "intermediate_value_type": finite_iv}
                        for s, v in enumerate(curve, start=1)
                    ]
                    values.append({"trial_id": tid, "objective": 0, "value": max(curve), "value_type": finite_v})
                    lr = 10 ** rng.uniform(-5, 0)
                    params.append({"trial_id": tid, "param_name": "lr", "param_value": lr, "distribution_json": dist})
                conn.execute(models.TrialIntermediateValueModel.__table__.insert(), ivs)
                conn.execute(models.TrialValueModel.__table__.insert(), values)
                conn.execute(models.TrialParamModel.__table__.insert(), params)
                if attrs:
                    conn.execute(models.TrialSystemAttributeModel.__table__.insert(), attrs)
    finally:
        close_storage(storage)
    return time.perf_counter() - start


def probe_values(n_probes: int, seed: int) -> list[list[float]]:
    """Learning curves for the probe trials, from poor to good (some are pruned early, some never)."""
    rng = random.Random(seed)
    return [[_curve(0.2 + 0.75 * (i + 0.5) / n_probes, s, rng) for s in range(1, STEPS + 1)] for i in range(n_probes)]


def _settings(url: str, name: str, rule: PrunerRule = RULE) -> Any:
    """What the probes' coordinator is built with, in process or as a Ray actor: pruning only, no search."""
    from hpo.coordinator.settings import CoordinatorSettings

    return CoordinatorSettings(
        storage_url=url,
        study_name=name,
        metric=METRIC,
        direction="maximize",
        distributions={},
        base_config={},
        fixed_params={},
        checkpoint_root=tempfile.gettempdir() + "/hpo-bench-p1",
        sampler="random",
        seed=0,
        rule=rule,
    )


def _coordinator(url: str, name: str, rule: PrunerRule = RULE) -> Any:
    from hpo.coordinator.coordinator import Coordinator

    return Coordinator(_settings(url, name, rule))


def measure_hpo(
    url: str, probes: dict[int, list[list[float]]], rounds: int, kind: str = "median"
) -> dict[int, dict[str, Any]]:
    """A coordinator per study (start-up timed), then ``rounds`` probes per study, the studies taken in turn
    so that the machine's noise falls on every size alike. Round r replays probe ``r % len(probes[n])``;
    each probe trial is told FAIL afterwards (FAIL trials do not count for the median)."""
    from hpo.coordinator.messages import Outcome

    out: dict[int, dict[str, Any]] = {}
    coords: dict[int, Any] = {}
    try:
        for n in probes:
            startup, coords[n] = _timed(lambda n=n: _coordinator(url, _name(n, kind), RULES[kind]))
            out[n] = {"startup_s": startup, "latencies": [], "decisions": []}
        for r in range(rounds):
            for n, coord in coords.items():
                values = probes[n][r % len(probes[n])]
                asked = coord.ask()
                row = []
                for step, v in enumerate(values, start=1):
                    t0 = time.perf_counter()
                    answer = coord.report(asked.trial_id, step, {METRIC: v})
                    out[n]["latencies"].append(time.perf_counter() - t0)
                    row.append(answer == "prune")
                out[n]["decisions"].append(row)
                coord.tell(asked.trial_id, Outcome("FAIL", None, "benchmark probe"))
    finally:
        for coord in coords.values():
            coord.close()
    return out


def measure_optuna(url: str, probes: dict[int, list[list[float]]], kind: str = "median") -> dict[int, dict[str, Any]]:
    """Each probe is a fresh worker: new storage, ``load_study``, ``Trial``, then report + should_prune per
    step. The studies are taken in turn, like ``measure_hpo``."""
    import optuna
    from optuna.trial import TrialState

    drivers = {n: optuna.load_study(study_name=_name(n, kind), storage=url) for n in probes}  # they ask and tell
    out: dict[int, dict[str, Any]] = {
        n: {"first": [], "first_with_load": [], "warm": [], "decisions": []} for n in probes
    }
    try:
        for i in range(max(len(p) for p in probes.values())):
            for n, driver in drivers.items():
                if i >= len(probes[n]):
                    continue
                asked = driver.ask()
                t_load = time.perf_counter()
                pruner = RULES[kind].to_optuna()
                study = optuna.load_study(study_name=_name(n, kind), storage=url, pruner=pruner)  # type: ignore[arg-type]
                trial = optuna.Trial(study, asked._trial_id)
                row = []
                for step, v in enumerate(probes[n][i], start=1):
                    t0 = time.perf_counter()
                    trial.report(v, step)
                    prune = trial.should_prune()
                    t1 = time.perf_counter()
                    if step == 1:
                        out[n]["first"].append(t1 - t0)
                        out[n]["first_with_load"].append(t1 - t_load)
                    else:
                        out[n]["warm"].append(t1 - t0)
                    row.append(bool(prune))
                out[n]["decisions"].append(row)
                driver.tell(asked, state=TrialState.FAIL)
                close_storage(study._storage)  # a worker that exits: its connections go
    finally:
        for driver in drivers.values():
            close_storage(driver._storage)
    return out


def _name(n: int, kind: str = "median") -> str:
    """The study a type measures on: the median and percentile rules share one (no rung attrs)."""
    return f"p1-{n}" if kind in ("median", "percentile") else f"p1-{kind}-{n}"


def _ray_probe(coordinator: Any, trial_id: int, values: list[float]) -> tuple[list[float], list[bool]]:
    """On a Ray worker: the reports of one probe through the coordinator actor, as ``run_trial`` makes them."""
    import ray

    latencies, decisions = [], []
    for step, v in enumerate(values, start=1):
        t0 = time.perf_counter()
        answer = ray.get(coordinator.report.remote(trial_id, step, {METRIC: v}))
        latencies.append(time.perf_counter() - t0)
        decisions.append(answer == "prune")
    return latencies, decisions


def measure_ray(url: str, n: int, probes: list[list[float]]) -> dict[str, Any]:
    """The coordinator as a Ray actor (as sweeps run it), each probe reported from a Ray task."""
    import ray

    from hpo.coordinator import actor as coordinator_actor
    from hpo.coordinator.messages import Outcome

    t0 = time.perf_counter()
    actor = coordinator_actor.start(_settings(url, _name(n)))
    ray.get(actor.connect.remote())
    startup = time.perf_counter() - t0
    task = ray.remote(num_cpus=0.001)(_ray_probe)
    first, warm, decisions = [], [], []
    try:
        for values in probes:
            asked = ray.get(actor.ask.remote())
            lat, dec = ray.get(task.remote(actor, asked.trial_id, values))
            first.append(lat[0])
            warm += lat[1:]
            decisions.append(dec)
            ray.get(actor.tell.remote(asked.trial_id, Outcome("FAIL", None, "benchmark probe")))
    finally:
        ray.get(actor.close.remote())
        ray.kill(actor)
    return {"startup_s": startup, "first": first, "warm": warm, "decisions": decisions}


def _pairs(ours: list[list[bool]], theirs: list[list[bool]]) -> list[tuple[bool, bool]]:
    """(hpo, Optuna) decision pairs for the same probe and step."""
    return [(bool(a), bool(b)) for ha, hb in zip(ours, theirs, strict=True) for a, b in zip(ha, hb, strict=True)]


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(admin_url: str, quick: bool = False, *, with_ray: bool | None = None) -> Result:
    import ray

    quiet_optuna()
    with_ray = ray.is_initialized() if with_ray is None else with_ray
    sizes = (100, 1_000) if quick else (100, 1_000, 10_000)
    result = Result("P1", "Prune-decision latency vs study size (PostgreSQL)")
    builds: dict[str, dict[int, float]] = {}
    measured: dict[str, dict[str, Any]] = {}
    with fresh_database(admin_url, "p1") as url, fresh_database(admin_url, "p1base") as base_url:
        for kind, rule in RULES.items():
            if kind == "percentile":
                builds[kind] = builds["median"]  # the same study: no rung attrs
                continue
            builds[kind] = {}
            for n in sizes:
                name = _name(n, kind)
                builds[kind][n] = build_study(url, name, n, seed=n, rungs=rung_attrs(rule, name))
                build_study(base_url, name, n, seed=n, rungs=rung_attrs(rule, name))  # the baseline's copy
        probes = {n: probe_values(N_PROBES[n], seed=1000 + n) for n in sizes}
        for kind in RULES:
            measured[kind] = {
                "hpo": measure_hpo(url, probes, HPO_ROUNDS, kind),
                "optuna": measure_optuna(base_url, probes, kind),
                "ray": measure_ray(url, sizes[-1], probes[sizes[-1]]) if with_ray and kind == "median" else None,
            }
    types = {kind: _summarize(kind, sizes, builds[kind], probes, m) for kind, m in measured.items()}
    result.raw = {
        "sizes": list(sizes),
        "summary": types["median"]["summary"],  # the median rule's, as before the other types
        "mismatches": sum(t["mismatches"] for t in types.values()),
        "decisions": sum(t["decisions"] for t in types.values()),
        "types": types,
    }
    for kind, t in types.items():
        result.rows += _rows(kind, sizes, t, quick)
    median_summary = types["median"]["summary"]
    starts = "; ".join(
        f"{kind}: " + ", ".join(f"{n:,}: {secs(t['summary'][n]['hpo_startup_s'])}" for n in sizes)
        for kind, t in types.items()
    )
    result.notes += [
        f"Studies: {', '.join(f'{n:,}' for n in sizes)} COMPLETE trials x {STEPS} steps, bulk-inserted "
        f"({', '.join(secs(builds['median'][n]) for n in sizes)} for the median rule's); successive halving's "
        "and Hyperband's studies also carry each trial's `completed_rung_<i>` attrs (its value at every rung its "
        "20 steps reach, in its own bracket for Hyperband). hpo and the baseline each have their own copy of "
        "every study. Pruners, the same on both sides: "
        + ", ".join(f"{OPTUNA_NAMES[kind]}({_params(rule)})" for kind, rule in RULES.items())
        + ". Baseline probes (fresh workers) per size: "
        + ", ".join(f"{n:,}: {median_summary[n]['probes']}" for n in sizes)
        + f"; hpo replays them for {HPO_ROUNDS} probes per size. Each probe reports {STEPS} steps whatever the "
        "answer, so every decision is compared: all of them for the median and percentile rules (a FAIL probe "
        "does not count for them), the probes before the first replay for successive halving and Hyperband (a "
        "probe's rungs count for the later ones, on each side alike). The sizes are measured in turn, probe by "
        "probe, so that the machine's noise falls on all of them alike.",
        "hpo: in-process `Coordinator.report` (DB write of the intermediate value + decision, + one write of "
        "`completed_rung_<i>` per rung reached). Coordinator start-up (reads the study once per sweep: the "
        f"COMPLETE trials, or every trial for the rung-based pruners), not in the latencies: {starts}.",
        "Baseline: each probe is a fresh worker (new RDBStorage, `load_study` + `Trial(study, id)`); its first "
        "`report` + `should_prune` reads the whole study; later calls hit the storage's cache but still walk "
        "every COMPLETE trial (every trial, for the rung-based pruners). Its p50/p95 cover all calls, first "
        "ones included (1 in 20).",
    ]
    if "ray" in median_summary[sizes[-1]]:
        s = median_summary[sizes[-1]]
        result.notes.append(
            f"Through Ray at {sizes[-1]:,} trials (median rule): actor start-up {secs(s['ray_startup_s'])}; a "
            f"worker's first call {ms(s['ray_first']['p50'])} (median), later calls p50 {ms(s['ray_warm']['p50'])} / "
            f"p95 {ms(s['ray_warm']['p95'])} (in-process, measured earlier: p50 {ms(s['hpo']['p50'])}). The decision "
            "is made in the actor either way; what Ray adds is one actor call per report."
        )
    return result


def _params(rule: PrunerRule) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(rule).items())


def _stats(xs: list[float]) -> dict[str, float]:
    return {"p50": median(xs), "p95": percentile(xs, 95), "max": max(xs) if xs else math.nan, "n": len(xs)}


def _summarize(
    kind: str,
    sizes: tuple[int, ...],
    builds: dict[int, float],
    probes: dict[int, list[list[float]]],
    measured: dict[str, Any],
) -> dict[str, Any]:
    """One type's figures per size, and its decisions compared with Optuna's."""
    hpo, base, ray_res = measured["hpo"], measured["optuna"], measured["ray"]
    only_complete = RULES[kind].loads == ("COMPLETE",)
    summary: dict[int, dict[str, Any]] = {}
    mismatches = total = 0
    for n in sizes:
        theirs = base[n]["decisions"]
        rounds = HPO_ROUNDS if only_complete else len(theirs)
        pairs = _pairs(hpo[n]["decisions"][:rounds], [theirs[r % len(theirs)] for r in range(rounds)])
        if ray_res is not None and n == sizes[-1]:
            pairs += _pairs(ray_res["decisions"], theirs)
        mismatches += sum(a != b for a, b in pairs)
        total += len(pairs)
        e = base[n]
        summary[n] = {
            "hpo": _stats(hpo[n]["latencies"]),
            "hpo_startup_s": hpo[n]["startup_s"],
            "optuna_all": _stats(e["first"] + e["warm"]),
            "optuna_warm": _stats(e["warm"]),
            "optuna_first": _stats(e["first"]),
            "optuna_first_with_load": _stats(e["first_with_load"]),
            "build_s": builds[n],
            "probes": len(probes[n]),
            "prunes": sum(b for _, b in pairs),
        }
        if ray_res is not None and n == sizes[-1]:
            summary[n]["ray"] = _stats(ray_res["first"] + ray_res["warm"])
            summary[n]["ray_first"] = _stats(ray_res["first"])
            summary[n]["ray_warm"] = _stats(ray_res["warm"])
            summary[n]["ray_startup_s"] = ray_res["startup_s"]
    return {"summary": summary, "mismatches": mismatches, "decisions": total}


def _rows(kind: str, sizes: tuple[int, ...], t: dict[str, Any], quick: bool) -> list[Row]:
    """One type's rows: latency per size against the baseline, growth, identical decisions."""
    summary, rows = t["summary"], []
    largest, smallest = sizes[-1], sizes[0]
    for n in sizes:
        s = summary[n]
        # hpo's figure covers every call a worker makes; the baseline's every call including a fresh worker's first
        r = ratio(s["hpo"]["p95"], s["optuna_all"]["p95"])
        rows.append(
            Row(
                f"{kind}: p95 report + decision, {n:,} trials (p50 in brackets)",
                "hpo <= 2x stock (CI gate)" if quick else "lower is better",
                f"{ms(s['hpo']['p95'])} ({ms(s['hpo']['p50'])})",
                f"{ms(s['optuna_all']['p95'])} ({ms(s['optuna_all']['p50'])})",
                fmt_ratio(r),
                r <= 2.0 if quick else None,
            )
        )
        rows.append(
            Row(
                f"{kind}: first decision of a fresh worker, {n:,} trials",
                "",
                "no per-worker cost (coordinator already warm)",
                f"{ms(s['optuna_first']['p50'])} (+ load_study: {ms(s['optuna_first_with_load']['p50'])})",
                "",
                None,
            )
        )
    if not quick:
        p95 = summary[largest]["hpo"]["p95"]
        rows.append(Row(f"{kind}: hpo p95 at {largest:,} trials", "<= 10 ms", ms(p95), "", "", p95 <= GOAL_P95_S))
    growth = ratio(summary[largest]["hpo"]["p95"], summary[smallest]["hpo"]["p95"])
    base_growth = ratio(summary[largest]["optuna_all"]["p95"], summary[smallest]["optuna_all"]["p95"])
    rows.append(
        Row(
            f"{kind}: p95 growth {largest:,} / {smallest:,} trials",
            "hpo <= 2",
            f"{growth:.2f}",
            f"{base_growth:.2f}",
            "",
            growth <= GOAL_GROWTH,
        )
    )
    if "ray" in summary[largest]:
        s = summary[largest]
        rows.append(
            Row(
                f"{kind}: the same through the Ray actor, from a Ray task, {largest:,} trials: p95 (p50)",
                "information (the goal is on the in-process figure)",
                f"{ms(s['ray']['p95'])} ({ms(s['ray']['p50'])}); first call {ms(s['ray_first']['p50'])}",
                "",
                "",
                None,
            )
        )
    rows.append(
        Row(
            f"{kind}: decisions identical to Optuna's {OPTUNA_NAMES[kind]}",
            "all",
            f"{t['decisions'] - t['mismatches']}/{t['decisions']} equal",
            f"{sum(summary[n]['prunes'] for n in sizes)} prune answers",
            "",
            bool(t["mismatches"] == 0),
        )
    )
    return rows
