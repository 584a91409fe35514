"""``hpo verify``: its pure parts by tables, the real CLI end to end (real training on a real local Ray,
the verdict stored on a real SQLite study), and ``hpo report`` showing a stored verdict."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from hpo import files
from hpo import study as studies
from hpo.config import EXPORT_FORMAT, load_train_file
from hpo.errors import ConfigError, StudyNotFoundError
from hpo.verify import (
    Run,
    Verdict,
    VerifySettings,
    baseline_config,
    mean_ci95,
    reproduces,
    run_gpus,
    seeds_for,
    store_verdict,
    t_quantile,
)
from hpo.views.export import build_document, trial_gpus
from hpo.views.report import write_report
from storage import StorageError, close_storage, open_storage
from tests.conftest import run_cli
from trials.config import TrainConfig

#: Digits 0 and 1, resnet18 from scratch, 32 px: about 230 training images, 57 val, 72 test; a few seconds a run.
#: SGD at lr 0.05 gets 56 of 57 val images right with any seed; at lr 5.0 (x100) it stays at chance.
TUNED: dict[str, Any] = {
    "model": "resnet18",
    "weights": None,
    "dataset": {"type": "digits", "classes": [0, 1]},
    "image_size": 32,
    "epochs": 3,
    "lr": 0.05,
    "optimizer": "sgd",
    "batch_size": 16,
    "aug_strength": 0.0,
    "early_stopping": {"patience": None},
    "device": "cpu",
}
KEYS = {"tuned", "baseline", "trial_value", "reproduced", "gain", "seeds", "metric"}


# ---------------------------------------------------------------- pure parts


def test_baseline_resets_the_searched_hyperparameters_and_keeps_the_rest() -> None:
    tuned = TrainConfig.from_dict({**TUNED, "dropout": 0.4, "weight_decay": 0.003, "seed": 7})
    base = baseline_config(tuned)
    defaults = TrainConfig()
    for name in ("lr", "batch_size", "dropout", "weight_decay", "aug_strength"):
        assert getattr(base, name) == getattr(defaults, name), name
    for name in ("model", "weights", "dataset", "epochs", "optimizer", "image_size", "seed", "device"):
        assert getattr(base, name) == getattr(tuned, name), name
    assert baseline_config(tuned, ("lr",)) == tuned.replace(lr=defaults.lr)


@pytest.mark.parametrize(("seed", "n", "expected"), [(0, 3, [0, 1, 2]), (41, 1, [41]), (5, 2, [5, 6])])
def test_seeds_start_at_the_configs_own(seed: int, n: int, expected: list[int]) -> None:
    assert seeds_for(TrainConfig(seed=seed), n) == expected


@pytest.mark.parametrize(
    ("df", "expected"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423), (1000, 1.9623)]
)
def test_t_quantile_matches_the_table(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("values", "mean", "ci"),
    [
        ([1.0, 2.0, 3.0], 2.0, (2.0 - 4.3027 / math.sqrt(3), 2.0 + 4.3027 / math.sqrt(3))),  # sd 1
        ([0.02, 0.02], 0.02, (0.02, 0.02)),  # no spread: a point
        ([0.05], 0.05, None),  # one seed: no interval
        ([0.1, math.nan], math.nan, (math.nan, math.nan)),
    ],
)
def test_mean_and_95_percent_interval(values: list[float], mean: float, ci: tuple[float, float] | None) -> None:
    got_mean, got_ci = mean_ci95(values)
    assert got_mean == pytest.approx(mean, nan_ok=True)
    if ci is None:
        assert got_ci is None
    else:
        assert got_ci == pytest.approx(ci, abs=1e-4, nan_ok=True)


@pytest.mark.parametrize(
    ("values", "recorded", "tolerance", "expected"),
    [
        ([0.95, 0.97], 0.96, 0.01, True),
        ([0.95, 0.96], 0.965, 0.01, True),  # off by exactly the tolerance
        ([0.93, 0.95], 0.96, 0.01, False),
        ([0.5, 0.5], 0.98, 0.01, False),
        ([0.96, math.nan], 0.96, 0.01, False),  # a diverged run never reproduces
        ([0.4, 0.42], 0.41, 0.0, True),
    ],
)
def test_reproduced_rule(values: list[float], recorded: float, tolerance: float, expected: bool) -> None:
    assert reproduces(values, recorded, tolerance) is expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": 0}, "--seeds must be between 1 and 1000, got 0"),
        ({"tolerance": -0.1}, "--tolerance must be a finite number >= 0, got -0.1"),
        ({"tolerance": math.inf}, "--tolerance must be a finite number >= 0, got inf"),
        ({"cpus_per_run": 0}, "--cpus-per-run must be > 0, got 0"),
        ({"gpus_per_run": -1.0}, "--gpus-per-run must be >= 0, got -1.0"),
    ],
)
def test_bad_settings_are_one_line_naming_the_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        VerifySettings(**kwargs)


@pytest.mark.parametrize(
    ("flag", "recorded", "cluster", "expected"),
    [
        (None, 1.0, 8, (1.0, "the sweep's trial")),  # the sweep's GPUs by default
        (None, 0.0, 8, (0.0, "the sweep's trial")),  # a trial that ran on CPU is verified on CPU
        (None, 2.0, 8, (2.0, "the sweep's trial")),
        (None, 2.0, 1, (1.0, "the sweep's trial")),  # at most what the cluster has
        (None, 1.0, 0, (0.0, "the cluster has no GPU")),  # as gpus_per_trial: auto
        (None, None, 4, (1.0, "auto")),  # a file that does not say: one GPU, as gpus_per_trial: auto
        (None, None, 0, (0.0, "the cluster has no GPU")),
        (0.0, 1.0, 8, (0.0, "--gpus-per-run")),  # the flag overrides
        (0.5, None, 0, (0.5, "--gpus-per-run")),  # even where Ray then cannot place it (as before)
    ],
)
def test_verify_runs_with_the_sweeps_gpus(
    flag: float | None, recorded: float | None, cluster: float, expected: tuple[float, str]
) -> None:
    assert run_gpus(flag, recorded, cluster) == expected


def test_the_export_records_the_trials_gpus_and_old_files_still_load(tmp_path: Path) -> None:
    def trial(user_attrs: dict[str, Any]) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(value=0.9, user_attrs=user_attrs)

    assert trial_gpus(trial({studies.ATTR_NODE: {"gpus": ["3"], "host": "h"}})) == 1.0
    assert trial_gpus(trial({studies.ATTR_NODE: {"gpus": []}})) == 0.0
    assert trial_gpus(trial({})) is None
    common = {"study": "s", "trial": 3, "value": 0.9, "metric": "val_acc", "direction": "maximize"}
    doc = build_document(TUNED, **common, storage_url="sqlite:///x.db", gpus_per_trial=1.0)
    assert doc["version"] == EXPORT_FORMAT == 1 and doc["provenance"]["gpus_per_trial"] == 1.0
    (tmp_path / "new.yaml").write_text(files.dumps(doc))
    provenance = load_train_file(tmp_path / "new.yaml").provenance
    assert provenance is not None and provenance.gpus_per_trial == 1.0
    old = build_document(TUNED, **common, storage_url="sqlite:///x.db")
    assert "gpus_per_trial" not in old["provenance"]  # not known: the file is as before
    old["train"]["amp"] = True  # and a file exported when amp was a bool
    (tmp_path / "old.yaml").write_text(files.dumps(old))
    loaded = load_train_file(tmp_path / "old.yaml")
    assert loaded.provenance is not None and loaded.provenance.gpus_per_trial is None and loaded.train.amp == "auto"


def sample_verdict(study: str = "s") -> Verdict:
    def runs(arm: Any, vals: list[float], tests: list[float]) -> list[Run]:
        return [Run(arm, seed, v, t, "completed", 3) for seed, v, t in zip((0, 1, 2), vals, tests, strict=True)]

    return Verdict(
        metric="val_acc",
        direction="maximize",
        seeds=[0, 1, 2],
        tuned=runs("tuned", [0.95, 0.96, 0.97], [0.93, 0.94, 0.95]),
        baseline=runs("baseline", [0.90, 0.91, 0.89], [0.90, 0.90, 0.91]),
        baseline_source="defaults",
        study=study,
        trial=4,
        trial_value=0.962,
        tolerance=0.01,
    )


def test_verdict_document_has_stable_keys_and_pairs_by_seed() -> None:
    doc = sample_verdict().to_dict()
    assert set(doc) >= KEYS
    assert doc["tuned"] == {"val": [0.95, 0.96, 0.97], "test": [0.93, 0.94, 0.95]}
    assert doc["baseline"]["test"] == [0.90, 0.90, 0.91]
    assert doc["seeds"] == [0, 1, 2] and doc["trial_value"] == 0.962 and doc["reproduced"] is True
    assert doc["gain"]["mean"] == pytest.approx(0.03667, abs=1e-4)  # (0.03 + 0.04 + 0.04) / 3
    lo, hi = doc["gain"]["ci95"]
    assert lo < doc["gain"]["mean"] < hi
    assert json.loads(json.dumps(doc)) == doc  # plain JSON


# ---------------------------------------------------------------- stored verdict, and the report


def make_study(tmp_path: Path, name: str) -> str:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    storage = open_storage(url)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_user_attr(studies.ATTR_METRIC, "val_acc")
    finally:
        close_storage(storage)
    return url


def test_report_shows_a_stored_verdict(tmp_path: Path) -> None:
    url = make_study(tmp_path, "verified")
    page = write_report(url, "verified", tmp_path / "before.html").read_text(encoding="utf-8")
    assert 'id="verify"' not in page  # no verdict yet: no section
    store_verdict(url, "verified", sample_verdict("verified").to_dict())
    page = write_report(url, "verified", tmp_path / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="verify">') : page.index("</section>", page.index('id="verify"'))]
    text = " ".join(section.split())
    assert "Verified by hpo verify" in text
    assert '<div class="label">reproduced</div><div class="value">yes</div>' in text
    # the tolerance used: the seeds' spread (sd 0.01) as a 95% band, 1.96 x 0.01 x sqrt(1 + 1/3), above the 0.01 floor
    assert "mean retrained val_acc 0.96 vs trial 4&#39;s 0.962, tolerance 0.0226317" in text
    assert '<div class="value">+0.0367</div>' in text and "95% CI [+0.0" in text
    assert "test_acc, tuned minus default hyperparameters, paired by seed" in text
    assert '<div class="label">seeds</div><div class="value">3</div>' in text and "training seeds 0, 1, 2" in text


def test_a_stored_verdict_is_text_on_the_page(tmp_path: Path) -> None:
    url = make_study(tmp_path, "escaped")
    planted = dataclasses.replace(sample_verdict("escaped"), baseline_source="<script>alert(1)</script>.yaml")
    store_verdict(url, "escaped", planted.to_dict())
    page = write_report(url, "escaped", tmp_path / "report.html").read_text(encoding="utf-8")
    assert "tuned minus &lt;script&gt;alert(1)&lt;/script&gt;.yaml" in page
    assert "<script>alert(1)" not in page


def test_a_stored_verdict_that_is_not_one_is_left_out(tmp_path: Path) -> None:
    url = make_study(tmp_path, "odd")
    store_verdict(url, "odd", {"reproduced": "<script>yes</script>", "gain": 3})
    page = write_report(url, "odd", tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="verify"' not in page and "<script>yes" not in page


def test_storing_needs_an_existing_storage_and_study(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such file"):
        store_verdict(f"sqlite:///{tmp_path / 'missing.db'}", "x", {})
    assert not (tmp_path / "missing.db").exists()  # nothing created
    url = make_study(tmp_path, "here")
    with pytest.raises(StudyNotFoundError, match="study 'elsewhere' not found"):
        store_verdict(url, "elsewhere", {})


# ---------------------------------------------------------------- the real CLI


def write_export(path: Path, train: dict[str, Any], *, value: float, storage: str, study: str = "digits01") -> Path:
    """An ``hpo export`` file, made by the exporter's own document builder."""
    doc = build_document(
        train, study=study, trial=3, value=value, metric="val_acc", direction="maximize", storage_url=storage
    )
    path.write_text(files.dumps(doc))
    assert load_train_file(path).version == EXPORT_FORMAT
    return path


@pytest.fixture(scope="module")
def trial_value() -> float:
    """What the trial recorded: the tuned config trained once, by the same function a verify run calls."""
    from trials.train import fit_and_test

    threads = torch.get_num_threads()
    try:
        summary = fit_and_test(TrainConfig.from_dict(TUNED), 1)
    finally:
        torch.set_num_threads(threads)
    return float(summary["best_metrics"]["val_acc"])


@pytest.mark.slow
def test_cli_verify_reproduces_writes_every_key_and_stores_the_verdict(tmp_path: Path, trial_value: float) -> None:
    url = make_study(tmp_path, "digits01")
    best = write_export(tmp_path / "best.yaml", TUNED, value=trial_value, storage=url)
    out = tmp_path / "out" / "verify.json"
    r = run_cli("verify", str(best), "--seeds", "2", "--json", "-o", str(out), env={"HPO_STORAGE": ""}, timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    doc = json.loads(out.read_text())
    assert json.loads(r.stdout) == doc  # --json: the document alone on stdout; the table and progress on stderr
    assert "reproduced: yes" in r.stderr and f"wrote {out}" in r.stderr
    assert set(doc) >= KEYS
    assert doc["seeds"] == [0, 1] and doc["metric"] == "val_acc" and doc["reproduced"] is True
    for arm in ("tuned", "baseline"):
        assert set(doc[arm]) == {"val", "test"}
        assert len(doc[arm]["val"]) == len(doc[arm]["test"]) == 2
        assert all(0 <= x <= 1 for x in doc[arm]["val"] + doc[arm]["test"])
    assert doc["tuned"]["val"][0] == pytest.approx(trial_value, abs=0.02)  # seed 0 is the trial's own run
    assert doc["trial_value"] == trial_value
    assert set(doc["gain"]) == {"mean", "ci95"} and len(doc["gain"]["ci95"]) == 2
    paired = [t - b for t, b in zip(doc["tuned"]["test"], doc["baseline"]["test"], strict=True)]
    assert doc["gain"]["mean"] == pytest.approx(sum(paired) / 2)
    assert "reproduced: yes" in text and "gain on the test split" in text and "95% CI" in text
    assert "verdict stored on study 'digits01'" in text
    storage = open_storage(url, create_schema=False)
    try:
        stored = optuna.load_study(study_name="digits01", storage=storage).user_attrs[studies.ATTR_VERIFY]
    finally:
        close_storage(storage)
    assert stored == doc


@pytest.mark.slow
def test_cli_verify_an_export_whose_lr_was_changed_fails_with_the_figures(tmp_path: Path, trial_value: float) -> None:
    missing = f"sqlite:///{tmp_path / 'gone.db'}"
    best = write_export(tmp_path / "best.yaml", TUNED, value=trial_value, storage=missing)
    best.write_text(best.read_text().replace("lr: 0.05\n", "lr: 5.0\n"))  # edited by hand: x100
    assert load_train_file(best).train.lr == 5.0
    out = tmp_path / "verify.json"
    r = run_cli("verify", str(best), "--seeds", "2", "-o", str(out), env={"HPO_STORAGE": ""}, timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "reproduced: NO" in text
    doc = json.loads(out.read_text())  # the figures are written even so
    assert doc["reproduced"] is False and abs(doc["val_mean"] - trial_value) > 0.01
    assert f"{doc['val_mean']:.4f}" in text and f"{trial_value:.4f}" in text  # both figures printed
    assert "tolerance 0.0100" in text
    assert "note: verdict not stored on study 'digits01'" in text and "no such file" in text
    assert not (tmp_path / "gone.db").exists()


@pytest.mark.slow
def test_cli_verify_refuses_bad_input_before_starting_ray(tmp_path: Path) -> None:
    hand_written = tmp_path / "train.yaml"
    hand_written.write_text(files.dumps({"train": TUNED}))
    r = run_cli("verify", str(hand_written), env={"HPO_STORAGE": ""}, timeout=120)
    assert r.returncode == 2 and "no provenance (not written by hpo export)" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "runs (" not in r.stdout
    best = write_export(tmp_path / "best.yaml", TUNED, value=0.9, storage="sqlite:///x.db")
    other = tmp_path / "other.yaml"
    other.write_text(
        files.dumps({"train": {**TUNED, "dataset": {"type": "digits", "classes": [0, 1], "split_seed": 1}}})
    )
    r = run_cli("verify", str(best), "--baseline", str(other), env={"HPO_STORAGE": ""}, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "train.dataset.split_seed must be the tuned config's 0" in r.stderr and "got 1" in r.stderr
    r = run_cli("verify", "--help", timeout=60)
    assert r.returncode == 0 and "--seeds" in r.stdout and "--baseline" in r.stdout and "--tolerance" in r.stdout


def test_cli_verify_json_the_old_way_is_refused_in_one_line_naming_o(tmp_path: Path) -> None:
    """``--json`` took a path before it became a flag, as on every command: ``--json out.json`` says to use -o."""
    best = write_export(tmp_path / "best.yaml", TUNED, value=0.9, storage="sqlite:///x.db")
    for args in (["best.yaml", "--seeds", "3", "--json", "verify.json"], ["--json", "verify.json", "best.yaml"]):
        r = run_cli("verify", *args, cwd=tmp_path, env={"HPO_STORAGE": ""}, timeout=120)
        assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
        assert r.stderr.strip().splitlines() == [
            "error: --json is a flag now (the verdict as JSON on stdout); write the file with -o verify.json, "
            f"got an extra argument {'verify.json' if args[0] == 'best.yaml' else 'best.yaml'!r}"
        ]
    r = run_cli("verify", str(best), "other.yaml", cwd=tmp_path, env={"HPO_STORAGE": ""}, timeout=120)
    assert r.returncode == 2 and "unexpected extra argument (other.yaml)" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.yaml"]  # nothing written, no x.db


def test_verify_names_the_weights_field_as_every_command_does(tmp_path: Path) -> None:
    """``train.weights: ...``, as hpo sweep, validate and train say it (``trials.preflight.field_message``)."""
    from hpo.verify import verify_file

    missing = tmp_path / "nope.pt"
    best = write_export(tmp_path / "best.yaml", {**TUNED, "weights": str(missing)}, value=0.9, storage="sqlite:///x")
    with pytest.raises(ConfigError) as info:
        verify_file(best, VerifySettings(seeds=1))
    assert str(info.value) == f"{best}: train.weights: file not found: {missing}"


# ---------------------------------------------------------------- hpo train records the test split


@pytest.mark.slow
def test_cli_train_evaluates_on_the_test_split_and_records_it(tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(files.dumps({"train": {**TUNED, "epochs": 1}}))
    r = run_cli("train", str(cfg), "--output", str(tmp_path / "run"), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["test_metrics"]
    assert set(test) == {"test_acc", "test_loss"} and 0 <= test["test_acc"] <= 1
    assert f"test: test_acc={test['test_acc']:.4f} test_loss={test['test_loss']:.4f}" in r.stdout
    assert set(metrics["best_metrics"]) >= {"val_acc", "val_loss"}  # val as before, test beside it


def test_train_without_a_test_split_records_none(tmp_path: Path) -> None:
    from hpo.train import train_from_file

    cfg = tmp_path / "train.yaml"
    train = {**TUNED, "epochs": 1, "dataset": {"type": "digits", "classes": [0, 1], "test_split": 0}}
    cfg.write_text(files.dumps({"train": {**train, "dataset": {**train["dataset"], "max_train_samples": 32}}}))
    threads = torch.get_num_threads()
    try:
        run = train_from_file(cfg, tmp_path / "run", log=lambda s: None, num_threads=1)
    finally:
        torch.set_num_threads(threads)
    assert run.test_metrics is None
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test_metrics"] is None
