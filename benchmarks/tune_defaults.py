"""The protocol that chose hpo's search defaults: ``python -m benchmarks.tune_defaults [--pool N]``.

It runs on the tuning task only (``benchmarks.search_tasks.tuning_task``: shapes of classes P5 never uses,
seeds ``TUNING_SEEDS``), never on P5's data or seeds, and writes ``docs/tuning.json`` (generated; the
README quotes it). Three steps:

1. **A pool of learning curves.** ``--pool`` configurations drawn at random from the search space (seed
   1000), each fine-tuned for every epoch with no pruning and no early stopping, each with its own
   ``train.seed`` and the split of its tuning seed; per epoch the val accuracy.
2. **Pruning, replayed on the pool.** For the median rule with each (``n_startup_trials``,
   ``n_warmup_steps``) candidate, 200 random orders of the pool are replayed through Optuna's own
   ``MedianPruner`` (an in-memory study, trial by trial): the epochs it trains as a fraction of the full
   runs, and the best final val accuracy it keeps against the pool's best (the regret). The bias of
   comparing at equal epochs against large batches (fewer optimizer steps per epoch): per batch size, the
   rank correlation between each epoch's val accuracy and the final one, and how often a configuration
   that ends in the pool's top half is pruned. The default is the cheapest candidate whose mean regret is
   within 0.5 pp among those that judge no head-only epoch (``n_warmup_steps`` >= the task's
   ``freeze_backbone_epochs`` + 1) when epoch 1's ranking is measured to be biased (its correlation with
   the final ranking differs by more than 0.2 between batch sizes).
3. **Samplers, on a surrogate of the pool.** A random forest fitted to the pool (params -> final val
   accuracy) stands in for training; each sampler candidate runs 30 seeded searches per budget (12, 24 and
   40 trials), asking two trials at a time as a ``parallel: 2`` sweep does (the first two told after the
   next two are asked). Score: the surrogate's value of the best trial found, mean over searches. The
   default is the best candidate over the budgets (mean rank).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO
from benchmarks.search_tasks import SPACE, TUNING_SEEDS, tuning_task

OUT = REPO / "docs" / "tuning.json"
STARTUP_CANDIDATES = ((2, 1), (2, 2), (3, 2), (5, 2), (3, 3), (5, 3))  # (n_startup_trials, n_warmup_steps)
BUDGETS = (12, 24, 40)
SEARCHES = 30
REGRET_PP = 0.5
FALSE_PRUNE = 0.10


# --------------------------------------------------------------------------- 1. the pool


def _space() -> Any:
    from hpo.config import searchable_fields
    from hpo.space import parse_space

    return parse_space(SPACE, searchable_fields())


def draw_pool(n: int, seed: int = 1000) -> list[dict[str, Any]]:
    """``n`` configurations drawn at random from the space (Optuna's RandomSampler, seeded)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask(dict(space.distributions))
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def _train_one(job: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    from trials.config import TrainConfig, merge_dotted
    from trials.train import fit

    i, params = job
    seed = TUNING_SEEDS[i % len(TUNING_SEEDS)]
    train = tuning_task().for_seed(seed)
    train["seed"] = seed * 100 + i
    train["early_stopping"] = {"patience": None}
    cfg = TrainConfig.from_dict(merge_dotted(train, params))
    start = time.perf_counter()
    res = fit(cfg, num_threads=1)
    return {
        "params": params,
        "split_seed": seed,
        "curve": [float(h["val_acc"]) for h in res.history],
        "seconds": time.perf_counter() - start,
    }


def train_pool(configs: Sequence[dict[str, Any]], processes: int = 2) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        out = []
        for k, rec in enumerate(pool.imap(_train_one, list(enumerate(configs)))):
            out.append(rec)
            print(f"pool {k + 1}/{len(configs)}: {rec['curve']} ({rec['seconds']:.1f} s)", flush=True)
    return out


# --------------------------------------------------------------------------- 2. pruning, replayed


def replay_median(pool: Sequence[dict[str, Any]], n_startup: int, n_warmup: int, order: Sequence[int]) -> dict:
    """Replay the pool in ``order`` through Optuna's MedianPruner (one trial at a time, as a 1-slot sweep
    would). Returns epochs trained, the best final val kept, and which trials were pruned."""
    import optuna

    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=n_warmup)
    )
    epochs, best, pruned = 0, -math.inf, set()
    for i in order:
        trial = study.ask()
        curve = pool[i]["curve"]
        for epoch, value in enumerate(curve, start=1):
            epochs += 1
            trial.report(value, epoch)
            if epoch < len(curve) and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned.add(i)
                break
        else:
            study.tell(trial, max(curve))
            best = max(best, max(curve))
    return {"epochs": epochs, "best": best, "pruned": pruned}


def pruning_table(pool: Sequence[dict[str, Any]], orders: int = 200) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    full_epochs = sum(len(p["curve"]) for p in pool)
    pool_best = max(max(p["curve"]) for p in pool)
    top_cut = statistics.median(max(p["curve"]) for p in pool)
    top = {i for i, p in enumerate(pool) if max(p["curve"]) >= top_cut}
    batches = sorted({int(p["params"]["batch_size"]) for p in pool})
    rng = random.Random(0)
    rows = []
    for n_startup, n_warmup in STARTUP_CANDIDATES:
        fractions, regrets = [], []
        false_by_batch: dict[int, list[int]] = {b: [0, 0] for b in batches}
        for _ in range(orders):
            order = list(range(len(pool)))
            rng.shuffle(order)
            r = replay_median(pool, n_startup, n_warmup, order)
            fractions.append(r["epochs"] / full_epochs)
            regrets.append((pool_best - r["best"]) * 100)
            for i in top:
                b = int(pool[i]["params"]["batch_size"])
                false_by_batch[b][1] += 1
                false_by_batch[b][0] += i in r["pruned"]
        rate = {str(b): (f / n if n else math.nan) for b, (f, n) in false_by_batch.items()}
        rows.append(
            {
                "n_startup_trials": n_startup,
                "n_warmup_steps": n_warmup,
                "epochs_fraction": statistics.mean(fractions),
                "regret_pp": statistics.mean(regrets),
                "regret_pp_p90": sorted(regrets)[int(0.9 * (len(regrets) - 1))],
                "top_half_false_prune_by_batch_size": rate,
            }
        )
    return rows


def rank_correlation_by_batch(pool: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per batch size, Spearman's rho between the val accuracy at epoch k and the final best, k = 1.."""
    from scipy.stats import spearmanr

    out: dict[str, list[float]] = {}
    epochs = min(len(p["curve"]) for p in pool)
    for b in sorted({int(p["params"]["batch_size"]) for p in pool}):
        group = [p for p in pool if int(p["params"]["batch_size"]) == b]
        finals = [max(p["curve"]) for p in group]
        out[str(b)] = [float(spearmanr([p["curve"][k] for p in group], finals)[0]) for k in range(epochs)]
    return out


def head_only_bias(correlation: dict[str, list[float]]) -> float:
    """How much epoch 1's ranking depends on the batch size: the spread of its rank correlation with the
    final ranking across batch sizes."""
    first = [c[0] for c in correlation.values() if c and math.isfinite(c[0])]
    return max(first) - min(first) if first else 0.0


def choose_pruner(rows: Sequence[dict[str, Any]], *, frozen_epochs: int, bias: float) -> dict[str, Any]:
    allowed = [r for r in rows if bias <= 0.2 or r["n_warmup_steps"] >= frozen_epochs + 1]
    ok = [r for r in allowed if r["regret_pp"] <= REGRET_PP]
    pick = min(ok or allowed, key=lambda r: (r["epochs_fraction"], r["regret_pp"]))
    return {
        "n_startup_trials": pick["n_startup_trials"],
        "n_warmup_steps": pick["n_warmup_steps"],
        "warmup_past_head_only": bias > 0.2,
        "head_only_bias": bias,
        "met": bool(ok),
    }


# --------------------------------------------------------------------------- 3. samplers, on a surrogate


def _features(params: dict[str, Any]) -> list[float]:
    return [
        math.log10(params["lr"]),
        math.log2(params["batch_size"]),
        params["dropout"],
        math.log10(params["weight_decay"]),
        params["aug_strength"],
    ]


def surrogate(pool: Sequence[dict[str, Any]]) -> Callable[[dict[str, Any]], float]:
    from sklearn.ensemble import RandomForestRegressor

    x = [_features(p["params"]) for p in pool]
    y = [max(p["curve"]) for p in pool]
    forest = RandomForestRegressor(n_estimators=100, min_samples_leaf=2, random_state=0).fit(x, y)
    return lambda params: float(forest.predict([_features(params)])[0])


def startup(n_trials: int, fraction: float) -> int:
    """Start-up trials as a fraction of the budget, at least 4 and at most Optuna's 10."""
    return max(4, min(10, round(n_trials * fraction)))


def sampler_candidates(n_trials: int) -> dict[str, Callable[[int], Any]]:
    """Candidates named by kind (the same name at every budget); each asks two at a time, so TPE runs with
    ``constant_liar`` as hpo's parallel sweeps do."""
    import optuna

    s = optuna.samplers
    out: dict[str, Callable[[int], Any]] = {
        "random": lambda seed: s.RandomSampler(seed=seed),
        # Optuna 5's TPESampler defaults: multivariate for one objective, constant_liar on, 10 start-up trials
        "tpe, Optuna's defaults (10 start-up)": lambda seed: s.TPESampler(seed=seed),
    }
    for label, fraction in (("n/3", 1 / 3), ("n/5", 1 / 5), ("n/8", 1 / 8)):
        k = startup(n_trials, fraction)
        out[f"tpe multivariate, start-up {label}"] = lambda seed, k=k: s.TPESampler(
            seed=seed, n_startup_trials=k, multivariate=True, constant_liar=True
        )
    k5 = startup(n_trials, 1 / 5)
    out["tpe independent, start-up n/5"] = lambda seed: s.TPESampler(
        seed=seed, n_startup_trials=k5, multivariate=False, constant_liar=True
    )
    out["gp"] = lambda seed: s.GPSampler(seed=seed)
    return out


def search(make: Callable[[int], Any], objective: Callable[[dict[str, Any]], float], n: int, seed: int) -> float:
    """A 2-slot search on the surrogate: two asked, then the older one told, as a parallel-2 sweep runs."""
    import optuna

    space = _space()
    study = optuna.create_study(direction="maximize", sampler=make(seed))
    running: list[Any] = []
    best = -math.inf
    for _ in range(n):
        running.append(study.ask(dict(space.distributions)))
        if len(running) == 2:
            t = running.pop(0)
            v = objective(t.params)
            best = max(best, v)
            study.tell(t, v)
    for t in running:
        v = objective(t.params)
        best = max(best, v)
        study.tell(t, v)
    return best


def sampler_table(pool: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    objective = surrogate(pool)
    rows = []
    for n in BUDGETS:
        for name, make in sampler_candidates(n).items():
            searches = SEARCHES if name != "gp" else 8  # GP costs up to a second per ask
            found = [search(make, objective, n, 5000 + k) for k in range(searches)]
            rows.append(
                {
                    "budget": n,
                    "sampler": name,
                    "mean_best": statistics.mean(found),
                    "sem": statistics.stdev(found) / math.sqrt(len(found)),
                    "searches": searches,
                }
            )
            print(f"budget {n} {name}: {statistics.mean(found):.4f} over {searches}", flush=True)
    return rows


def choose_sampler(rows: Sequence[dict[str, Any]]) -> str:
    """The candidate with the best mean rank over the budgets."""
    ranks: dict[str, list[int]] = {}
    for n in BUDGETS:
        at = sorted((r for r in rows if r["budget"] == n), key=lambda r: -r["mean_best"])
        for k, r in enumerate(at):
            ranks.setdefault(r["sampler"], []).append(k)
    return min(ranks, key=lambda name: statistics.mean(ranks[name]))


def _saved_pool(path: Path) -> list[dict[str, Any]]:
    pool: list[dict[str, Any]] = json.loads(path.read_text())["pool"]
    return pool


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tune_defaults", description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=48, help="configurations in the pool (default 48)")
    parser.add_argument("--reuse-pool", action="store_true", help="keep the pool in docs/tuning.json, redo 2 and 3")
    parser.add_argument("--output", default=str(OUT))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pool = _saved_pool(Path(args.output)) if args.reuse_pool else train_pool(draw_pool(args.pool))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"pool": pool}, indent=1) + "\n")  # kept if a later step fails
    prune_rows = pruning_table(pool)
    correlation = rank_correlation_by_batch(pool)
    frozen = int(tuning_task().train.get("freeze_backbone_epochs", 0))
    pruner_choice = choose_pruner(prune_rows, frozen_epochs=frozen, bias=head_only_bias(correlation))
    print(json.dumps(pruner_choice), flush=True)
    sampler_rows = sampler_table(pool)
    out = {
        "protocol": "benchmarks/tune_defaults.py",
        "task": "shapes-tuning",
        "seeds": list(TUNING_SEEDS),
        "space": SPACE,
        "rank_correlation_by_batch_size": correlation,
        "pruning": prune_rows,
        "pruner_choice": pruner_choice,
        "samplers": sampler_rows,
        "sampler_choice": choose_sampler(sampler_rows),
        "seconds": time.perf_counter() - started,
        "pool": pool,
    }
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("pruner_choice", "sampler_choice", "rank_correlation_by_batch_size")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
