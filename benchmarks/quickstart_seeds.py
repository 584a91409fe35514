"""Does the quickstart search visibly? ``python -m benchmarks.quickstart_seeds [--seeds 0,1,2,3,4]``.

Runs ``examples/quickstart.yaml`` as it is, through the real CLI (``hpo sweep``) on a SQLite file, once per
sampler seed (a copy of the file with only ``study.sampler.seed``, the study name and ``output_dir``
changed), and records for each: the sweep's wall time, the trial numbers, the best trial and whether it came
after TPE's random start-up trials, and how many trials were pruned. Writes ``docs/quickstart_seeds.json``
(generated; the README quotes it). Exits 1 unless the best trial comes after the start-up phase on most
seeds and every sweep took at most ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO
from benchmarks.results import git_state

QUICKSTART = REPO / "examples" / "quickstart.yaml"
OUT = REPO / "docs" / "quickstart_seeds.json"


def one(seed: int, workdir: Path) -> dict[str, Any]:
    import optuna

    from hpo.config import load_sweep_config

    data = yaml.safe_load(QUICKSTART.read_text())
    data["study"] = {**data["study"], "name": f"quickstart-seed{seed}", "sampler": {"name": "tpe", "seed": seed}}
    data["output_dir"] = str(workdir / "runs")
    path = workdir / f"quickstart-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(data))
    storage = f"sqlite:///{workdir / 'hpo.db'}"
    hpo = str(Path(sys.executable).with_name("hpo"))
    start = time.perf_counter()
    proc = subprocess.run(
        [hpo, "sweep", str(path), "--storage", storage, "--no-progress"], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed}: hpo sweep exited {proc.returncode}: {proc.stderr[-2000:]}")
    cfg = load_sweep_config(path, storage=storage)
    study = optuna.load_study(study_name=f"quickstart-seed{seed}", storage=storage)
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial
    states = [t.state.name for t in trials]
    return {
        "seed": seed,
        "seconds": wall,
        "startup_trials": cfg.study.startup_trials,
        "best_trial": best.number,
        "best_value": best.value,
        "best_after_startup": best.number >= cfg.study.startup_trials,
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "pruned_batch_sizes": sorted(int(t.params["batch_size"]) for t in trials if t.state.name == "PRUNED"),
        "values": [t.value for t in trials],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quickstart_seeds", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--max-seconds", type=float, default=180.0)
    parser.add_argument("--output", default=str(OUT))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="hpo-quickstart-seeds-") as tmp:
        runs = []
        for seed in seeds:
            runs.append(one(seed, Path(tmp)))
            r = runs[-1]
            print(
                f"seed {seed}: {r['seconds']:.0f} s, best trial {r['best_trial']} ({r['best_value']:.4f}), "
                f"start-up {r['startup_trials']}, {r['complete']} complete / {r['pruned']} pruned",
                flush=True,
            )
    after = sum(r["best_after_startup"] for r in runs)
    sha, dirty = git_state()
    out = {
        "generated_by": "python -m benchmarks.quickstart_seeds",
        "commit": sha,
        "dirty": dirty,
        "config": "examples/quickstart.yaml",
        "load_average_1min_at_end": os.getloadavg()[0],
        "cores": os.cpu_count(),
        "runs": runs,
        "best_after_startup": f"{after}/{len(runs)}",
        "max_seconds": max(r["seconds"] for r in runs),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(f"best trial after the start-up phase on {after}/{len(runs)} seeds; slowest sweep {out['max_seconds']:.0f} s")
    return 0 if after * 2 > len(runs) and out["max_seconds"] <= args.max_seconds else 1


if __name__ == "__main__":
    sys.exit(main())
