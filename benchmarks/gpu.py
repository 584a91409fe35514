"""The GPU figures, for a machine with one CUDA GPU (an H200 when one is lent): ``benchmarks/gpu.sh`` runs this.

Three parts, within about 10 minutes:

- ``p6``: the training loop on ResNet-50, bf16 autocast, channels_last, synthetic 224 px batches already on
  the GPU: ``trials``' ``train_one_epoch`` against a bare PyTorch loop, interleaved repeats (goal >= 3,000 img/s;
  NVIDIA publishes 2,470 img/s for ResNet-50 AMP training on an A100).
- ``loading``: ImageFolder loading at 224 px: a few hundred JPEGs written to a temporary folder, read through
  the real data pipeline (``load_data``, the training transform, ``make_loaders`` with ``num_workers: auto``
  following this machine's CPUs) against ``num_workers: 0``, in images per second.
- ``sweep``: a short ``run_sweep`` with ``gpus_per_trial: 0.5`` (two trials per GPU) and ``device: cuda``; checks
  that each trial used CUDA and that two trials ran on the GPU at the same time.

The figures go into ``BENCHMARKS.json`` under a top-level ``"GPU"`` entry (read, replace that entry only,
write atomically), with the commit, whether the tree was dirty, the date and the device's name. Exits 2
without CUDA; ``--cpu-smoke`` runs the ``p6`` part on the CPU (resnet18, 32 px, a few steps) to test the code.

    .venv/bin/python -m benchmarks.gpu                 # on the GPU machine (benchmarks/gpu.sh)
    .venv/bin/python -m benchmarks.gpu --cpu-smoke --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, interleaved, median

P6_GOAL_IMG_S = 3000.0
A100_AMP_IMG_S = 2470.0  # NVIDIA's published ResNet-50 AMP training throughput on one A100
PARTS = ("p6", "loading", "sweep")
ENTRY = "GPU"


@dataclass(frozen=True)
class P6Shape:
    """What the ``p6`` part trains: model, image size, batch, timed steps per repeat, warm-up steps, repeats."""

    model: str
    image_size: int
    batch_size: int
    steps: int
    warmup: int
    repeats: int


GPU_SHAPE = P6Shape("resnet50", 224, 256, 30, 15, 5)
CPU_SMOKE_SHAPE = P6Shape("resnet18", 32, 8, 2, 1, 2)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated parts to run (default: {','.join(PARTS)})"
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="the p6 part on the CPU (resnet18, 32 px, few steps)")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.json", help="the JSON to merge into")
    parser.add_argument("--no-write", action="store_true", help="print the figures, write nothing")
    parser.add_argument("--images", type=int, default=512, help="JPEGs for the loading part (default 512)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in str(args.parts).split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts: unknown part(s) {unknown or parts} (valid: {', '.join(PARTS)})")
    if args.images < 16:
        parser.error(f"--images must be at least 16, got {args.images}")
    args.parts = ["p6"] if args.cpu_smoke else parts
    return args


# ---------------------------------------------------------------------------------------------------
# p6: the training loop on synthetic batches


def p6_throughput(shape: P6Shape, device_name: str) -> dict[str, Any]:
    """img/s of ``train_one_epoch`` and of the bare loop on the same model, optimizer and batch (bf16
    autocast and channels_last on CUDA; fp32 on the CPU), ``shape.repeats`` interleaved repeats."""
    import torch
    from torch import nn

    from trials.config import TrainConfig
    from trials.models import build_model, split_parameters
    from trials.train import build_optimizer, train_one_epoch

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = build_model(shape.model, 1000, dropout=0.0, weights=None).to(device)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = build_optimizer(TrainConfig(model=shape.model, lr=1e-3), *split_parameters(model))
    loss_fn = nn.CrossEntropyLoss()
    amp = torch.bfloat16 if cuda else None
    x = torch.randn(shape.batch_size, 3, shape.image_size, shape.image_size, device=device).to(memory_format=fmt)
    y = torch.randint(0, 1000, (shape.batch_size,), device=device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def ours(n: int) -> float:
        sync()
        start = time.perf_counter()
        train_one_epoch(model, [(x, y)] * n, optimizer, None, loss_fn, device, amp_dtype=amp, channels_last=cuda)
        sync()  # train_one_epoch ends with .item(): already synchronized; kept for the CPU/GPU symmetry
        return shape.batch_size * n / (time.perf_counter() - start)

    def bare(n: int) -> float:
        sync()
        start = time.perf_counter()
        model.train()
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        sync()
        return shape.batch_size * n / (time.perf_counter() - start)

    ours(shape.warmup)  # cudnn.benchmark picks its kernels, the allocator fills
    bare(shape.warmup)
    comparison = interleaved(lambda: ours(shape.steps), lambda: bare(shape.steps), shape.repeats)
    fit_img_s = median(comparison.hpo)
    return {
        "shape": shape.__dict__,
        "device": device_name,
        "amp": "bf16" if amp is not None else None,
        "channels_last": cuda,
        "fit_img_s": fit_img_s,
        "bare_img_s": median(comparison.baseline),
        "comparison": comparison.as_dict(),
        "goal_img_s": P6_GOAL_IMG_S if cuda else None,
        "passed": fit_img_s >= P6_GOAL_IMG_S if cuda else None,
        "a100_amp_published_img_s": A100_AMP_IMG_S,
    }


# ---------------------------------------------------------------------------------------------------
# loading: an image folder of JPEGs at 224 px


def write_jpegs(root: Path, n: int, size: tuple[int, int] = (500, 375)) -> Path:
    """``n`` distinct photo-sized JPEGs in two class folders under ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(0, 64, size=base.shape)
        pixels = ((base + noise + 17 * i) % 256).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:04d}.jpg", quality=90)
    return root


def loading_throughput(root: Path, *, workers: int | str, batch_size: int = 64) -> dict[str, Any]:
    """Training images per second of one pass through the real pipeline (decode, the training transform at
    strength 0.5, collate), after one unrecorded pass (workers started, caches warm)."""
    import torch

    from trials.config import TrainConfig
    from trials.data import load_data
    from trials.train import make_loaders

    config = TrainConfig.from_dict(
        {
            "dataset": {"type": "imagefolder", "path": str(root), "val_split": 0.1, "test_split": 0},
            "image_size": 224,
            "batch_size": batch_size,
            "aug_strength": 0.5,
            "num_workers": workers,
        }
    )
    data = load_data(config.dataset, image_size=224, aug_strength=config.aug_strength)
    train, _ = make_loaders(data.train, data.val, config, torch.Generator().manual_seed(0), pin_memory=False)
    for _ in train:
        pass
    start = time.perf_counter()
    n = sum(int(y.shape[0]) for _, y in train)
    seconds = time.perf_counter() - start
    return {"num_workers": config.num_workers, "resolved": train.loader.num_workers, "img_s": n / seconds}


def loading(images: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hpo-gpu-jpegs-") as tmp:
        root = write_jpegs(Path(tmp), images)
        auto = loading_throughput(root, workers="auto")
        none = loading_throughput(root, workers=0)
    return {"images": images, "source_size": [500, 375], "image_size": 224, "auto": auto, "zero": none}


# ---------------------------------------------------------------------------------------------------
# sweep: two trials per GPU


def gpu_trial(config: dict[str, Any], reporter: Any, checkpoint_dir: str, *, num_threads: int | None) -> Any:
    """The default workload, plus when it ran, on which GPU, and whether CUDA was used (a file in its folder)."""
    import torch

    from hpo.cluster.worker import train_workload

    entered = time.time()
    summary = train_workload(config, reporter, checkpoint_dir, num_threads=num_threads)
    record = {
        "entered_at": entered,
        "exited_at": time.time(),
        "cuda": torch.cuda.is_available() and torch.cuda.is_initialized(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "max_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
    }
    Path(checkpoint_dir, "gpu_trial.json").write_text(json.dumps(record))
    return summary


def overlap_s(records: Sequence[Mapping[str, Any]]) -> float:
    """The longest time any two of ``records`` (``entered_at``/``exited_at``) ran at the same time."""
    best = 0.0
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            best = max(best, min(a["exited_at"], b["exited_at"]) - max(a["entered_at"], b["entered_at"]))
    return best


def sweep(n_trials: int = 4) -> dict[str, Any]:
    """A short sweep (SQLite, local Ray with this machine's GPU), ``gpus_per_trial: 0.5``, parallel 2."""
    import optuna
    import yaml

    from hpo.config import load_sweep_config
    from hpo.sweep import run_sweep

    with tempfile.TemporaryDirectory(prefix="hpo-gpu-sweep-") as tmp:
        data = {
            "study": {"name": "gpu", "n_trials": n_trials, "sampler": {"name": "random", "seed": 0}},
            "search_space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "batch_size": [128, 256]},
            "pruner": "none",
            "resources": {"cpus_per_trial": 4, "gpus_per_trial": 0.5},
            "parallel": 2,
            "max_failures": 0,
            "train": {
                "model": "resnet18",
                "weights": None,  # random initialisation: nothing to download on the GPU machine
                "dataset": {"type": "digits"},
                "image_size": 64,
                "epochs": 3,
                "device": "cuda",
                "early_stopping": {"patience": None},
            },
        }
        path = Path(tmp, "gpu.yaml")
        path.write_text(yaml.safe_dump(data))
        url = f"sqlite:///{tmp}/gpu.db"
        cfg = load_sweep_config(path, storage=url, output_dir=f"{tmp}/runs")
        start = time.perf_counter()
        result = run_sweep(cfg, workload=gpu_trial, check_data=False, handle_sigint=False)
        wall = time.perf_counter() - start
        trials = optuna.load_study(study_name="gpu", storage=url).get_trials()
        records = []
        for t in trials:
            f = Path(t.user_attrs.get("checkpoint_dir", ""), "gpu_trial.json")
            if f.is_file():
                records.append({"number": t.number, "state": t.state.name, **json.loads(f.read_text())})
    overlap = overlap_s(records)
    return {
        "n_trials": n_trials,
        "gpus_per_trial": 0.5,
        "parallel": 2,
        "exit_code": result.exit_code,
        "wall_s": wall,
        "trials": records,
        "all_cuda": bool(records) and all(r["cuda"] for r in records),
        "max_overlap_s": overlap,
        "concurrent": overlap > 1.0,
        "passed": result.exit_code == 0
        and len(records) == n_trials
        and all(r["cuda"] for r in records)
        and overlap > 1.0,
    }


# ---------------------------------------------------------------------------------------------------
# the JSON


def merge_entry(path: Path, entry: Mapping[str, Any], key: str = ENTRY) -> dict[str, Any]:
    """Read the JSON document at ``path`` (none yet: an empty one), replace ``key`` with ``entry``, leave every
    other entry as it was, and write it back atomically. Returns the document written."""
    from benchmarks import results

    doc: dict[str, Any] = dict(results.load(path) or {})
    doc[key] = dict(entry)
    results.write(doc, path)
    return results.normalise(doc)


def provenance(device: str) -> dict[str, Any]:
    from benchmarks import results

    sha, dirty = results.git_state()
    return {"git_sha": sha, "dirty": dirty, "date": results.now(), "device": device, "machine": results.machine()}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(
            "benchmarks.gpu: CUDA is not available on this machine (use --cpu-smoke to test on the CPU)",
            file=sys.stderr,
        )
        return 2
    device = "cpu" if args.cpu_smoke else "cuda"
    entry: dict[str, Any] = provenance("cpu (smoke)" if args.cpu_smoke else torch.cuda.get_device_name())
    entry["versions"] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    ok = True
    for part in args.parts:
        start = time.perf_counter()
        if part == "p6":
            entry["p6"] = p6_throughput(CPU_SMOKE_SHAPE if args.cpu_smoke else GPU_SHAPE, device)
            ok &= entry["p6"]["passed"] is not False
        elif part == "loading":
            entry["loading"] = loading(args.images)
        else:
            entry["sweep"] = sweep()
            ok &= bool(entry["sweep"]["passed"])
        entry[part]["seconds"] = time.perf_counter() - start
        print(f"{part}: {json.dumps(entry[part], default=str)[:2000]}", flush=True)
    entry["passed"] = ok
    if not args.no_write:
        merge_entry(args.output, entry)
        print(f"wrote the {ENTRY!r} entry of {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
