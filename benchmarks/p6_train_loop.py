"""P6: images per second of the training loop against a bare PyTorch loop (``benchmarks.train_throughput``)."""

from __future__ import annotations

from benchmarks import train_throughput
from benchmarks.common import Comparison, Result, Row

GOAL = 0.95


def run(admin_url: str = "", quick: bool = False) -> Result:
    r = train_throughput.run(quick)
    result = Result("P6", "Training loop throughput (resnet18, 32x32 digits, CPU)")
    result.raw = dict(r)
    samples = r["comparison"]
    comparison = Comparison(list(samples["hpo"]), list(samples["baseline"]))
    result.settings = {
        "model": r["model"],
        "image_size": r["image_size"],
        "batch_size": r["batch_size"],
        "batches_per_repeat": r["batches_per_repeat"],
        "repeats": r["repeats"],
        "threads": r["threads"],
        "device": "cpu",
    }
    result.baselines = {
        "bare_pytorch_loop": {
            "loop": "zero_grad, forward, loss, backward, step; no schedule, no loss accumulation",
            "same_model_optimizer_batches": True,
            "threads": r["threads"],
        }
    }
    result.rows.append(
        Row(
            "img/s, `train_one_epoch` vs bare loop (median of paired ratios)",
            f">= {GOAL}",
            f"{r['fit_img_s']:.1f} img/s",
            f"{r['bare_img_s']:.1f} img/s",
            comparison.fmt_ratio(),
            comparison.ratio >= GOAL,
            comparison=comparison,
        )
    )
    result.notes += [
        f"batch {r['batch_size']}, {r['threads']} thread(s), {r['repeats']} interleaved repeats of "
        f"{r['batches_per_repeat']} batches; paired ratios ranged {r['ratio_min']:.3f}-{r['ratio_max']:.3f}. "
        f"Loop overhead {r['loop_overhead_us_per_step']:.0f} us per step (one-Linear probe) against a "
        f"{r['step_ms']:.0f} ms resnet18 step. Whole `fit` (DataLoader, per-sample transforms): "
        f"{r['fit_e2e_img_s']:.1f} img/s ({r['fit_e2e_ratio']:.3f}x bare), for information.",
        f"Measured by `{train_throughput.COMMAND}{' --quick' if quick else ''}`.",
    ]
    if "gpu_fit_img_s" in r:
        result.notes.append(
            f"{r['gpu']}: ResNet-50 bf16 channels_last {r['gpu_fit_img_s']:.0f} img/s (bare {r['gpu_bare_img_s']:.0f})."
        )
    return result
