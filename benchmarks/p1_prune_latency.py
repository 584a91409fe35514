"""P1: latency of recording one intermediate value and getting the prune decision, against study size, for
each pruner type (median, percentile, successive halving, Hyperband): warm against warm, and each side's cold
cost beside it.

Studies with 100, 1,000 and 10,000 COMPLETE trials of 20 steps are bulk-inserted into fresh PostgreSQL
databases (Optuna's own tables and enums, through SQLAlchemy Core: seconds instead of the minutes
``study.add_trials`` takes); for successive halving and Hyperband each trial also carries the
``completed_rung_<i>`` attrs Optuna's pruner writes (its value at every rung it reached). hpo and the
baseline each get their own copy of every study (same name, same content), since successive halving
counts every trial at a rung, the probes too. Then "probe" trials, RUNNING, report 20 steps each, hpo and
the baseline interleaved (``benchmarks.common.interleaved``), ``REPEATS`` times per size and type:

- hpo: a new ``Coordinator`` on the study per repeat (its start-up timed: hpo's cold cost, once per sweep;
  its first ask timed too), then ``coordinator.report(trial_id, step, metrics)`` = DB write + decision per
  call (warm); and, at the largest size, the same through the Ray actor from a Ray task, as a worker sees it.
- baseline: stock Optuna as its docs have a worker do it: an ``RDBStorage`` per worker process,
  ``optuna.load_study(..., pruner=<the same pruner>)`` + ``Trial(study, trial_id)``, then ``trial.report`` +
  ``trial.should_prune()`` per step. Its first call reads the whole study (its cold cost, once per worker);
  the later ones use the storage's cache (warm).

Probe i reports the same values on both paths, so every decision is compared (hpo's rule against
Optuna's pruner on the same data): every replayed probe for the median and percentile rules (they read
COMPLETE trials only, and the probes end FAIL), the probes before the first replay for successive halving
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
    Comparison,
    Result,
    Row,
    fresh_database,
    insert_complete_trials,
    interleaved,
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
GOAL_START_S = 1.0
#: Interleaved repeats per study size and type: each is one fresh stock worker (one probe; at 10,000 trials its
#: first call reads the whole study: seconds) and one new hpo coordinator reporting ROUNDS_PER_REPEAT probes.
REPEATS = 5
QUICK_REPEATS = 3
ROUNDS_PER_REPEAT = 4


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
        batch = 2000
        with engine.begin() as conn:
            for first in range(0, n_trials, batch):
                numbers = range(first, min(first + batch, n_trials))
                ids = insert_complete_trials(conn, study_id, numbers, lambda n: (now, now))
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


def measure_pairs(
    url: str, base_url: str, n: int, probes: list[list[float]], kind: str, repeats: int, rounds: int
) -> dict[str, Any]:
    """hpo and stock Optuna on one study size, interleaved ``repeats`` times (``benchmarks.common.interleaved``).

    - hpo, per repeat: a new ``Coordinator`` on the study (its start-up timed: hpo's cold cost, paid once per
      sweep), its first ``ask`` timed (it reads the whole study into Optuna's cache, for the sampler), then
      ``rounds`` probes of ``report`` = DB write + decision (the warm latencies), then closed.
    - stock, per repeat: one fresh worker (new storage, ``optuna.load_study`` with the same pruner,
      ``Trial(study, trial_id)``), reporting one probe with ``trial.report`` + ``trial.should_prune()`` per
      step: its first call reads the whole study (stock's cold cost, paid once per worker, timed with and
      without ``load_study``), the later ones are its warm latencies.

    Probes are taken in order on each side (hpo's probe ``k`` is stock's probe ``k``), each told FAIL after
    its last step, so the decisions can be compared. Returns the cold and warm ``Comparison`` (warm: each
    repeat's p95 on each side) and every sample."""
    import optuna
    from optuna.trial import TrialState

    from hpo.coordinator.messages import Outcome

    name, rule = _name(n, kind), RULES[kind]
    driver = optuna.load_study(study_name=name, storage=base_url)  # asks and tells the stock probes
    hpo: dict[str, Any] = {"startup_s": [], "first_ask_s": [], "latencies": [], "p95": [], "decisions": []}
    stock: dict[str, Any] = {"first": [], "first_with_load": [], "warm": [], "p95": [], "decisions": []}
    done = {"hpo": 0, "stock": 0}

    def run_hpo() -> float:
        startup, coord = _timed(lambda: _coordinator(url, name, rule))
        latencies: list[float] = []
        try:
            for r in range(rounds):
                values = probes[done["hpo"] % len(probes)]
                done["hpo"] += 1
                ask_s, asked = _timed(coord.ask)
                if r == 0:
                    hpo["first_ask_s"].append(ask_s)
                row = []
                for step, v in enumerate(values, start=1):
                    t0 = time.perf_counter()
                    answer = coord.report(asked.trial_id, step, {METRIC: v})
                    latencies.append(time.perf_counter() - t0)
                    row.append(answer == "prune")
                hpo["decisions"].append(row)
                coord.tell(asked.trial_id, Outcome("FAIL", None, "benchmark probe"))
        finally:
            coord.close()
        hpo["startup_s"].append(startup)
        hpo["latencies"] += latencies
        hpo["p95"].append(percentile(latencies, 95))
        return startup

    def run_stock() -> float:
        values = probes[done["stock"] % len(probes)]
        done["stock"] += 1
        asked = driver.ask()
        t_load = time.perf_counter()
        study = optuna.load_study(study_name=name, storage=base_url, pruner=rule.to_optuna())  # type: ignore[arg-type]
        trial = optuna.Trial(study, asked._trial_id)
        row, warm, first_with_load = [], [], math.nan
        for step, v in enumerate(values, start=1):
            t0 = time.perf_counter()
            trial.report(v, step)
            prune = trial.should_prune()
            t1 = time.perf_counter()
            if step == 1:
                stock["first"].append(t1 - t0)
                first_with_load = t1 - t_load
            else:
                warm.append(t1 - t0)
            row.append(bool(prune))
        stock["first_with_load"].append(first_with_load)
        stock["warm"] += warm
        stock["p95"].append(percentile(warm, 95))
        stock["decisions"].append(row)
        driver.tell(asked, state=TrialState.FAIL)
        close_storage(study._storage)  # a worker that exits: its connections go
        return first_with_load

    try:
        cold = interleaved(run_hpo, run_stock, repeats)
    finally:
        close_storage(driver._storage)
    return {"hpo": hpo, "optuna": stock, "cold": cold, "warm": Comparison(hpo["p95"], stock["p95"])}


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
    repeats = QUICK_REPEATS if quick else REPEATS
    result = Result("P1", "Prune-decision latency vs study size, warm and cold (PostgreSQL)")
    builds: dict[str, dict[int, float]] = {}
    measured: dict[str, dict[int, dict[str, Any]]] = {}
    ray_res: dict[str, Any] | None = None
    probes = {n: probe_values(repeats, seed=1000 + n) for n in sizes}
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
        for kind in RULES:
            measured[kind] = {
                n: measure_pairs(url, base_url, n, probes[n], kind, repeats, ROUNDS_PER_REPEAT) for n in sizes
            }
        if with_ray:
            ray_res = measure_ray(url, sizes[-1], probes[sizes[-1]])
    types = {
        kind: _summarize(kind, sizes, builds[kind], m, ray_res if kind == "median" else None)
        for kind, m in measured.items()
    }
    result.raw = {
        "sizes": list(sizes),
        "repeats": repeats,
        "summary": types["median"]["summary"],  # the median rule's, as before the other types
        "mismatches": sum(t["mismatches"] for t in types.values()),
        "decisions": sum(t["decisions"] for t in types.values()),
        "types": types,
    }
    for kind, t in types.items():
        result.rows += _rows(kind, sizes, t, measured[kind], quick)
    result.settings = {
        "sizes": list(sizes),
        "steps_per_trial": STEPS,
        "repeats": repeats,
        "probes_per_repeat": ROUNDS_PER_REPEAT,
        "pruners": {kind: dataclasses.asdict(rule) for kind, rule in RULES.items()},
        "storage": "PostgreSQL, one Coordinator (bounded pool) per sweep, started fresh each repeat",
    }
    result.baselines = {
        "optuna": {
            "pruners": {OPTUNA_NAMES[kind]: dataclasses.asdict(rule) for kind, rule in RULES.items()},
            "storage": "RDBStorage on PostgreSQL (optuna.load_study(storage=url, pruner=...)), one per worker",
            "per_probe": "a fresh worker: load_study + Trial(study, trial_id), then trial.report + trial.should_prune",
            "warm": "calls after the worker's first (its storage cache filled)",
        }
    }
    median_summary = types["median"]["summary"]
    result.notes += [
        f"Studies: {', '.join(f'{n:,}' for n in sizes)} COMPLETE trials x {STEPS} steps, bulk-inserted "
        f"({', '.join(secs(builds['median'][n]) for n in sizes)} for the median rule's); successive halving's "
        "and Hyperband's studies also carry each trial's `completed_rung_<i>` attrs (its value at every rung its "
        "20 steps reach, in its own bracket for Hyperband). hpo and the baseline each have their own copy of "
        "every study. Pruners, the same on both sides: "
        + ", ".join(f"{OPTUNA_NAMES[kind]}({_params(rule)})" for kind, rule in RULES.items())
        + f". Per size and type, {repeats} interleaved repeats (`benchmarks.common.interleaved`): hpo starts a "
        f"new coordinator and reports {ROUNDS_PER_REPEAT} probes of {STEPS} steps; stock Optuna runs one fresh "
        "worker reporting one probe. Each probe reports every step whatever the answer, so every decision is "
        "compared: all of them for the median and percentile rules (a FAIL probe does not count for them), "
        "the probes before the first replay for successive halving and Hyperband (a probe's rungs count for "
        "the later ones, on each side alike).",
        "Warm against warm: hpo's `Coordinator.report` (DB write of the intermediate value + decision, + one "
        "write of `completed_rung_<i>` per rung reached) against stock's `report` + `should_prune` after the "
        "worker's first call (its storage cache filled; each call still walks every COMPLETE trial, every trial "
        "for the rung-based pruners). The ratio is the median over repeats of hpo's p95 / stock's p95.",
        "Cold costs, beside it: hpo's coordinator start-up, once per sweep (it reads only what the pruner needs: "
        "per-step values of the COMPLETE trials, or the rung attrs, by a few SQL queries), against stock's first "
        "call of a fresh worker, once per worker (`load_study` + `Trial` + its first `should_prune`, which reads "
        "the whole study). hpo's first `ask` after start reads the whole study into Optuna's cache (the sampler "
        "and Optuna's waiting-trial lookup read it), by plain SQL: "
        + "; ".join(
            f"{kind}: " + ", ".join(f"{n:,}: {secs(t['summary'][n]['hpo_first_ask_s'])}" for n in sizes)
            for kind, t in types.items()
        )
        + " (median; these probes sample no parameter, so this is the read alone, not TPE's arithmetic).",
    ]
    if "ray" in median_summary[sizes[-1]]:
        s = median_summary[sizes[-1]]
        result.notes.append(
            f"Through Ray at {sizes[-1]:,} trials (median rule): actor start-up {secs(s['ray_startup_s'])}; a "
            f"worker's first call {ms(s['ray_first']['p50'])} (median), later calls p50 {ms(s['ray_warm']['p50'])} / "
            f"p95 {ms(s['ray_warm']['p95'])} (in-process: p50 {ms(s['hpo']['p50'])}). The decision "
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
    measured: dict[int, dict[str, Any]],
    ray_res: dict[str, Any] | None,
) -> dict[str, Any]:
    """One type's figures per size (JSON-ready: the comparisons as dicts), and its decisions compared with
    Optuna's."""
    only_complete = RULES[kind].loads == ("COMPLETE",)
    summary: dict[int, dict[str, Any]] = {}
    mismatches = total = 0
    for n in sizes:
        m = measured[n]
        hpo, base = m["hpo"], m["optuna"]
        theirs = base["decisions"]
        rounds = len(hpo["decisions"]) if only_complete else len(theirs)
        pairs = _pairs(hpo["decisions"][:rounds], [theirs[r % len(theirs)] for r in range(rounds)])
        if ray_res is not None and n == sizes[-1]:
            pairs += _pairs(ray_res["decisions"], theirs[: len(ray_res["decisions"])])
        mismatches += sum(a != b for a, b in pairs)
        total += len(pairs)
        summary[n] = {
            "hpo": _stats(hpo["latencies"]),
            "hpo_startup_s": median(hpo["startup_s"]),
            "hpo_startup_samples": hpo["startup_s"],
            "hpo_first_ask_s": median(hpo["first_ask_s"]),
            "hpo_first_ask_samples": hpo["first_ask_s"],
            "optuna_all": _stats(base["first"] + base["warm"]),
            "optuna_warm": _stats(base["warm"]),
            "optuna_first": _stats(base["first"]),
            "optuna_first_with_load": _stats(base["first_with_load"]),
            "warm": m["warm"].as_dict(),
            "cold": m["cold"].as_dict(),
            "build_s": builds[n],
            "probes": len(theirs),
            "prunes": sum(b for _, b in pairs),
        }
        if ray_res is not None and n == sizes[-1]:
            summary[n]["ray"] = _stats(ray_res["first"] + ray_res["warm"])
            summary[n]["ray_first"] = _stats(ray_res["first"])
            summary[n]["ray_warm"] = _stats(ray_res["warm"])
            summary[n]["ray_startup_s"] = ray_res["startup_s"]
    return {"summary": summary, "mismatches": mismatches, "decisions": total}


def _rows(
    kind: str, sizes: tuple[int, ...], t: dict[str, Any], comparisons: dict[int, dict[str, Any]], quick: bool
) -> list[Row]:
    """One type's rows: warm latency per size against the baseline's warm calls, the cold costs beside it,
    growth, coordinator start at the largest size, identical decisions."""
    summary, rows = t["summary"], []
    largest, smallest = sizes[-1], sizes[0]
    for n in sizes:
        s, warm, cold = summary[n], comparisons[n]["warm"], comparisons[n]["cold"]
        rows.append(
            Row(
                f"{kind}: warm p95 report + decision, {n:,} trials (p50 in brackets)",
                "hpo <= 2x stock (quick mode)" if quick else "lower is better",
                f"{ms(s['hpo']['p95'])} ({ms(s['hpo']['p50'])})",
                f"{ms(s['optuna_warm']['p95'])} ({ms(s['optuna_warm']['p50'])})",
                warm.fmt_ratio(),
                warm.ratio <= 2.0 if quick else None,
                comparison=warm,
            )
        )
        rows.append(
            Row(
                f"{kind}: cold cost, {n:,} trials: hpo's coordinator start (once per sweep) | stock's first "
                "call of a fresh worker, load_study included (once per worker)",
                "information (paid once per sweep against once per worker)",
                secs(s["hpo_startup_s"]),
                f"{secs(s['optuna_first_with_load']['p50'])} (first call alone {ms(s['optuna_first']['p50'])})",
                cold.fmt_ratio(),
                None,
                comparison=cold,
            )
        )
    if largest >= 10_000:
        start = summary[largest]["hpo_startup_s"]
        rows.append(
            Row(
                f"{kind}: coordinator start at {largest:,} trials (median of {len(comparisons[largest]['cold'].hpo)})",
                f"<= {GOAL_START_S:g} s",
                secs(start),
                "",
                "",
                start <= GOAL_START_S,
            )
        )
        p95 = summary[largest]["hpo"]["p95"]
        rows.append(Row(f"{kind}: hpo p95 at {largest:,} trials", "<= 10 ms", ms(p95), "", "", p95 <= GOAL_P95_S))
    growth = ratio(summary[largest]["hpo"]["p95"], summary[smallest]["hpo"]["p95"])
    base_growth = ratio(summary[largest]["optuna_warm"]["p95"], summary[smallest]["optuna_warm"]["p95"])
    rows.append(
        Row(
            f"{kind}: warm p95 growth {largest:,} / {smallest:,} trials",
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
