"""Record full learning curves of real ``trials`` fine-tuning runs: val and test metrics and seconds per epoch.

Each run is one (task, config, seed) of ``benchmarks.curves.tasks``: trained by ``trials.train``'s own epoch
loop (``_build_parts`` and ``_Fitting``, exactly what a sweep's trial runs), with a reporter that also
evaluates the held-out test split after each epoch (timed apart: the replay's seconds are training and
validation only, what a trial spends). Results append to ``data/<task>.jsonl`` one line per run, so
recording resumes where it stopped; ``data/meta.json`` names the commit, the ``trials/`` commit, the
versions and the command.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO
from benchmarks.curves import tasks

DATA = Path(__file__).resolve().parent / "data"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()


def meta() -> dict[str, Any]:
    import torch

    return {
        "commit": git("rev-parse", "HEAD"),
        "trials_commit": git("log", "-1", "--format=%H", "--", "trials"),
        "dirty_trials": bool(git("status", "--porcelain", "--", "trials")),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "command": "python -m benchmarks.curves record " + " ".join(sys.argv[2:]),
        "epochs": tasks.EPOCHS,
        "n_configs": tasks.N_CONFIGS,
        "seeds": list(tasks.SEEDS),
        "seeded_subset": tasks.SEEDED_SUBSET,
        "config_draw_seed": tasks.CONFIG_DRAW_SEED,
    }


def record_one(
    task: tasks.Task, index: int, params: dict[str, Any], seed: int, threads: int, epochs: int = tasks.EPOCHS
) -> dict[str, Any]:
    """Train one run for ``epochs`` epochs (the protocol's: ``EPOCHS``); its curve."""
    import torch
    from torch import nn

    from trials.config import TrainConfig
    from trials.data import ImageLoader, load_test
    from trials.train import _build_parts, _Fitting, _Run, evaluate

    config = TrainConfig.from_dict(task.train_config(params, seed, epochs))
    timings: dict[str, float] = {"train_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0, "report_s": 0.0}
    t_start = time.perf_counter()
    parts = _build_parts(config, threads, timings)
    epochs: list[dict[str, float]] = []
    last = [time.perf_counter()]
    test_s = [0.0]
    # the test split, loaded once, in large batches (eval mode: per-image results do not depend on the batch)
    test_loader = ImageLoader(
        load_test(config.dataset, image_size=config.resolved_image_size), shuffle=False, batch_size=256, num_workers=0
    )

    def reporter(epoch: int, metrics: Any) -> str:
        now = time.perf_counter()
        seconds = now - last[0]
        t = evaluate(parts.model, test_loader, nn.CrossEntropyLoss(), parts.device, amp_dtype=None, channels_last=False)
        test = {"test_acc": t["val_acc"], "test_loss": t["val_loss"]}
        parts.model.train()
        after = time.perf_counter()
        test_s[0] += after - now
        epochs.append(
            {
                "epoch": epoch,
                "val_acc": float(metrics["val_acc"]),
                "val_loss": float(metrics["val_loss"]),
                "train_loss": float(metrics["train_loss"]),
                "test_acc": float(test["test_acc"]),
                "test_loss": float(test["test_loss"]),
                "seconds": seconds,
            }
        )
        last[0] = after
        return "continue"

    setup_done = time.perf_counter()
    last[0] = setup_done
    _Fitting(config, parts, _Run(), reporter, None, lambda _: None, timings, t_start).train()
    return {
        "task": task.name,
        "config": index,
        "seed": seed,
        "params": params,
        "setup_s": setup_done - t_start,
        "test_eval_s": test_s[0],
        "n_train": len(parts.data.train),
        "n_val": len(parts.data.val),
        "threads": threads or torch.get_num_threads(),
        "epochs": epochs,
    }


def done(path: Path) -> set[tuple[int, int]]:
    if not path.is_file():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out.add((row["config"], row["seed"]))
    return out


def record(names: list[str], threads: int, limit: int | None = None, shard: tuple[int, int] = (0, 1)) -> None:
    """Record every missing run of tasks ``names`` (resumable); ``shard`` (k, n): only runs whose position
    in the list is k mod n, so n processes can share the work."""
    logging.getLogger("trials").setLevel(logging.WARNING)
    DATA.mkdir(parents=True, exist_ok=True)
    meta_path = DATA / "meta.json"
    info = meta()
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("trials_commit") != info["trials_commit"]:
            print(
                f"note: trials/ changed since the first curves ({old.get('trials_commit')} -> {info['trials_commit']})",
                file=sys.stderr,
            )
        info = {**old, "sessions": [*old.get("sessions", []), info]}
    else:
        info = {**info, "sessions": [dict(info)]}
    meta_path.write_text(json.dumps(info, indent=1) + "\n")
    configs = tasks.configs()
    n = 0
    for name in names:
        task = tasks.task(name)
        path = DATA / f"{name}.jsonl"
        have = done(path)
        todo = [r for k, r in enumerate(tasks.runs(name)) if k % shard[1] == shard[0] and r not in have]
        for index, seed in todo:
            if limit is not None and n >= limit:
                return
            t0 = time.perf_counter()
            row = record_one(task, index, configs[index], seed, threads)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            n += 1
            last = row["epochs"][-1]
            print(
                f"{name} config {index} seed {seed}: val {last['val_acc']:.3f} test {last['test_acc']:.3f} "
                f"({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )
