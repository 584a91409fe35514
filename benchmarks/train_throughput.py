"""Images per second of ``fit``'s training loop against a bare PyTorch loop.

Both loops train the same model with the same optimizer on the same pre-made batches of real images
(scikit-learn digits at 32x32, eval transform applied once), in the same process, interleaved and
alternating which goes first; the figures are medians over the repeats and ``ratio`` is the median of
the per-repeat ratios (``trials`` loop / bare loop). The goal is a ratio of at least 0.95: the loop
adds a per-step LR schedule and on-device loss accumulation, and never syncs the host per batch.

``fit_e2e_img_s`` is the whole ``fit`` (DataLoader with ``num_workers=0``, per-sample transforms,
evaluation excluded): the data pipeline's cost on top of the loop, for information.
On a machine with CUDA, ``gpu_resnet50_bf16`` also measures ResNet-50, bf16 autocast, channels_last,
on synthetic data.

    .venv/bin/python -m benchmarks.train_throughput            # full (about a minute on 2 CPU cores)
    .venv/bin/python -m benchmarks.train_throughput --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.common import interleaved
from trials.config import DatasetConfig, TrainConfig
from trials.data import load_data
from trials.errors import ModelError
from trials.models import build_model, split_parameters
from trials.train import build_optimizer, build_scheduler, fit, train_one_epoch

COMMAND = ".venv/bin/python -m benchmarks.train_throughput"
Batch = tuple[torch.Tensor, torch.Tensor]


def digit_batches(n_batches: int, batch_size: int, image_size: int = 32) -> list[Batch]:
    """``n_batches`` batches of real digit images, transformed once (so both loops see the same tensors)."""
    # aug_strength 0: the train split uses the deterministic eval transform
    bundle = load_data(DatasetConfig(type="digits", val_split=0.01), image_size=image_size, aug_strength=0.0)
    samples = [bundle.train[i] for i in range(n_batches * batch_size)]
    return [
        (
            torch.stack([x for x, _ in samples[i : i + batch_size]]),
            torch.tensor([y for _, y in samples[i : i + batch_size]]),
        )
        for i in range(0, len(samples), batch_size)
    ]


def bare_epoch(model: nn.Module, batches: list[Batch], optimizer: torch.optim.Optimizer, loss_fn: nn.Module) -> None:
    """The textbook loop: forward, loss, backward, step."""
    model.train()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def loop_vs_bare(
    *, batch_size: int, n_batches: int, repeats: int, model: nn.Module | None = None, batches: list[Batch] | None = None
) -> dict[str, Any]:
    """Median img/s of ``train_one_epoch`` and of ``bare_epoch``, interleaved (``benchmarks.common.interleaved``),
    their median paired ratio, and the ``comparison`` (its samples, as a dict).

    Defaults: resnet18 on digit batches. The same model and optimizer serve both loops, so they differ
    only in the loop itself.
    """
    torch.manual_seed(0)
    batches = batches if batches is not None else digit_batches(n_batches, batch_size)
    model = model if model is not None else build_model("resnet18", 10, dropout=0.2, weights=None)
    config = TrainConfig(epochs=2 * repeats + 2, lr=1e-3, batch_size=batch_size)
    params = list(model.parameters())
    try:
        backbone, head = split_parameters(model)
    except ModelError:  # not a torchvision classifier (the overhead probe): one group is enough
        backbone, head = params[:-1], params[-1:]
    optimizer = build_optimizer(config, backbone, head)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=n_batches)
    loss_fn = nn.CrossEntropyLoss()
    cpu = torch.device("cpu")

    def ours() -> None:
        train_one_epoch(model, batches, optimizer, scheduler, loss_fn, cpu)

    def bare() -> None:
        bare_epoch(model, batches, optimizer, loss_fn)

    ours()  # warm-up: allocator, oneDNN primitives
    bare()
    images = len(batches) * batch_size
    cmp = interleaved(lambda: images / _seconds(ours), lambda: images / _seconds(bare), repeats)
    return {
        "fit_img_s": statistics.median(cmp.hpo),
        "bare_img_s": statistics.median(cmp.baseline),
        "ratio": cmp.ratio,
        "ratio_min": min(cmp.ratios),
        "ratio_max": max(cmp.ratios),
        "comparison": cmp.as_dict(),
    }


def loop_overhead_us(*, steps: int = 300, repeats: int = 7) -> float:
    """Per-step time the ``trials`` loop adds to the bare loop, in microseconds, measured with a model so
    small (one Linear) that the loop's own work is all there is to time. Precise where the resnet
    comparison is drowned in run-to-run noise."""
    batch = (torch.randn(32, 3 * 32 * 32), torch.randint(0, 10, (32,)))
    r = loop_vs_bare(
        batch_size=32, n_batches=steps, repeats=repeats, model=nn.Linear(3 * 32 * 32, 10), batches=[batch] * steps
    )
    return (32 / r["fit_img_s"] - 32 / r["bare_img_s"]) * 1e6


def fit_end_to_end(*, batch_size: int, samples: int, epochs: int) -> float:
    """Training img/s of a whole ``fit`` on digits (DataLoader and per-sample transforms included)."""
    config = TrainConfig.from_dict(
        {
            "model": "resnet18",
            "weights": None,  # random initialisation, as the bare loop's model: nothing to download
            "image_size": 32,
            "batch_size": batch_size,
            "epochs": epochs,
            "aug_strength": 0.0,
            "dataset": {"type": "digits", "max_train_samples": samples, "max_val_samples": 32},
            "early_stopping": {"patience": None},
        }
    )
    result = fit(config, log=lambda line: None)
    return samples * epochs / result.timings["train_s"]


def gpu_resnet50_bf16(*, steps: int = 50) -> dict[str, float]:
    """ResNet-50 img/s on CUDA with bf16 autocast and channels_last, synthetic 224 px data already on the GPU:
    ``train_one_epoch`` and the bare loop (``benchmarks.gpu.p6_throughput``, the GPU script's P6 part)."""
    from dataclasses import replace

    from benchmarks import gpu

    r = gpu.p6_throughput(replace(gpu.GPU_SHAPE, steps=steps), "cuda")
    return {"gpu_fit_img_s": r["fit_img_s"], "gpu_bare_img_s": r["bare_img_s"]}


def run(quick: bool = False, *, num_threads: int | None = 1) -> dict[str, Any]:
    """Measure and return ``fit_img_s``, ``bare_img_s``, ``ratio`` (median of paired ratios) and more."""
    if num_threads:
        torch.set_num_threads(num_threads)
    batch_size, n_batches, repeats = (32, 4, 5) if quick else (64, 4, 25)
    out: dict[str, Any] = {
        "model": "resnet18",
        "image_size": 32,
        "batch_size": batch_size,
        "batches_per_repeat": n_batches,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    out.update(loop_vs_bare(batch_size=batch_size, n_batches=n_batches, repeats=repeats))
    out["loop_overhead_us_per_step"] = loop_overhead_us()
    out["step_ms"] = batch_size / out["bare_img_s"] * 1e3
    out["fit_e2e_img_s"] = fit_end_to_end(batch_size=batch_size, samples=n_batches * batch_size, epochs=2)
    out["fit_e2e_ratio"] = out["fit_e2e_img_s"] / out["bare_img_s"]
    if torch.cuda.is_available():
        out.update(gpu_resnet50_bf16(steps=20 if quick else 50))
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    r = run(args.quick, num_threads=args.threads)
    print(
        f"resnet18, 32x32 digits, batch {r['batch_size']}, {r['threads']} thread(s), "
        f"{r['repeats']} interleaved repeats of {r['batches_per_repeat']} batches, torch {r['torch']}\n"
    )
    print("| loop | img/s |\n|---|---|")
    print(f"| bare PyTorch loop | {r['bare_img_s']:.1f} |")
    print(f"| trials `train_one_epoch` | {r['fit_img_s']:.1f} |")
    print(f"| trials `fit` end to end (DataLoader, per-sample transforms) | {r['fit_e2e_img_s']:.1f} |")
    if "gpu_fit_img_s" in r:
        print(f"| ResNet-50 bf16 channels_last, {r['gpu']}: bare | {r['gpu_bare_img_s']:.0f} |")
        print(f"| ResNet-50 bf16 channels_last, {r['gpu']}: `train_one_epoch` | {r['gpu_fit_img_s']:.0f} |")
    print(
        f"\nratio (median of paired repeats): {r['ratio']:.3f} "
        f"(range {r['ratio_min']:.3f}-{r['ratio_max']:.3f}); end to end / bare: {r['fit_e2e_ratio']:.3f}"
    )
    print(
        f"loop overhead: {r['loop_overhead_us_per_step']:.0f} us per step, against a "
        f"{r['step_ms']:.0f} ms resnet18 step ({r['loop_overhead_us_per_step'] / 10 / r['step_ms']:.2f}%)"
    )
    flags = (" --quick" if args.quick else "") + (f" --threads {args.threads}" if args.threads != 1 else "")
    print(f"command: {COMMAND}{flags}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
