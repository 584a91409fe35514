"""P6's quick pass: ``train_one_epoch`` against a bare PyTorch loop on the same model, optimizer and batches,
interleaved repeats. Timings here are noisy: what is asserted is the method (the row, its paired samples, the
verdict from the median ratio, the settings), not the figure."""

from __future__ import annotations

import math

from benchmarks import p6_train_loop


def test_p6_quick_rows_and_comparison() -> None:
    result = p6_train_loop.run("", quick=True)
    assert result.key == "P6" and len(result.rows) == 1
    row = result.rows[0]
    cmp = row.comparison
    assert cmp is not None and cmp.repeats == result.settings["repeats"] >= 5
    assert all(math.isfinite(v) and v > 0 for v in cmp.hpo + cmp.baseline)
    assert row.passed == (cmp.ratio >= p6_train_loop.GOAL)
    assert math.isclose(cmp.ratio, result.raw["ratio"])
    assert row.ratio == cmp.fmt_ratio() and "n=" in row.ratio
    assert result.settings["model"] == "resnet18" and result.settings["threads"] == 1
    assert result.baselines["bare_pytorch_loop"]["same_model_optimizer_batches"] is True
    assert result.raw["loop_overhead_us_per_step"] == result.raw["loop_overhead_us_per_step"]  # not NaN
    assert result.raw["fit_e2e_img_s"] > 0
