"""Config drift (issue 18): a sweep that continues a study whose config changed what makes trials comparable is
refused with one line naming the fields, old and new, and writes nothing; ``--allow-changes`` continues and
records the change; a study an older hpo made gets a fingerprint on its next run; other secondary objectives
are refused (bug 5); and nothing is written to a study before its lease is ours. And the README's drift from the
examples it quotes: the ImageFolder example is the quickstart with exactly the lines the README shows changed.

Real parts: the ``hpo`` CLI as a subprocess, SQLite files and a real PostgreSQL, Optuna, the real lease."""

from __future__ import annotations

import copy
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpo import study as studies
from hpo.config import SweepConfig, load_sweep_config
from hpo.errors import ConfigError, StudyBusyError
from hpo.sweep import lease
from hpo.sweep.prepare import prepare_study, release_lease
from storage import opened
from tests.conftest import REPO, run_cli
from tests.fixtures_files import tiny_sweep

FINGERPRINT, CHANGES = "hpo:fingerprint", "hpo:changes"  # the study user attrs (README: "Continuing a study")


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return f"sqlite:///{tmp_path / 'd.db'}" if backend == "sqlite" else str(request.getfixturevalue("pg_url"))


def _cfg(tmp_path: Path, url: str, text: str, **overrides: Any) -> SweepConfig:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return load_sweep_config(path, storage=url, output_dir=str(tmp_path / "runs"), **overrides)


def snapshot(url: str, name: str) -> dict[str, Any]:
    """Everything stored for study ``name``: its attrs (the lease only as held or not) and its trials."""
    study = optuna.load_study(study_name=name, storage=url)
    system = dict(study._storage.get_study_system_attrs(study._study_id))
    held = system.pop(lease.KEY, None)
    trials = [(t.number, t.state.name, t.params, t.values, t.user_attrs, t.system_attrs) for t in study.get_trials()]
    return {"user": study.user_attrs, "system": system, "held": bool(held), "trials": trials}


def _old_study(url: str, name: str, directions: list[str], attrs: dict[str, Any], values: list[float]) -> None:
    """A study as hpo 8736b3a left it: its user attrs, one COMPLETE trial, no fingerprint."""
    study = optuna.create_study(study_name=name, storage=url, directions=directions)  # type: ignore[arg-type]
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 3e-3, log=True)})
    study.tell(trial, values)


# ------------------------------------------------------------------------------------------ through the CLI
@pytest.mark.slow
def test_a_changed_dataset_is_refused_writing_nothing_then_allowed_and_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    cfg = tmp_path / "drift.yaml"
    text = tiny_sweep("drift") + "parallel: 1\n"
    cfg.write_text(text)
    first = run_cli("sweep", str(cfg), "--storage", url, "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    before = snapshot(url, "drift")

    cfg.write_text(text.replace("max_train_samples: 60", "max_train_samples: 40"))
    refused = run_cli("sweep", str(cfg), "--storage", url, "--no-progress", "--n-trials", "3", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in refused.stdout + refused.stderr, line
    assert "train.dataset.max_train_samples 60 -> 40" in line
    assert "--study NEW" in line and "--allow-changes" in line
    assert snapshot(url, "drift") == before  # no trial, no attr, no lease
    assert before["user"][FINGERPRINT]["values"]["train.dataset.max_train_samples"] == 60

    allowed = run_cli(
        "sweep", str(cfg), "--storage", url, "--no-progress", "--n-trials", "3", "--allow-changes", cwd=tmp_path
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    after = snapshot(url, "drift")
    assert sum(t[1] == "COMPLETE" for t in after["trials"]) == 3 and not after["held"]
    (change,) = after["user"][CHANGES]
    assert change["hpo_version"] and change["time"]
    assert change["changes"] == [{"field": "train.dataset.max_train_samples", "old": 60, "new": 40}]
    assert after["user"][FINGERPRINT]["values"]["train.dataset.max_train_samples"] == 40
    from hpo.sweep.prepare import refuse_if_changed

    refuse_if_changed(load_sweep_config(cfg, storage=url))  # the changed config is the study's config now


def test_sweep_help_documents_allow_changes() -> None:
    r = run_cli("sweep", "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0 and "--allow-changes" in r.stdout and "recorded" in r.stdout


MO = """
study: {{name: mo, n_trials: 1, metrics: {metrics}, sampler: {{name: random, seed: 0}}}}
search_space:
  lr: {{low: 1.0e-3, high: 3.0e-3, log: true}}
pruner: none
train: {{model: resnet18, weights: null, epochs: 1, image_size: 32,
        dataset: {{type: digits, classes: [0, 1, 2], max_train_samples: 60, max_val_samples: 30}}}}
"""


def test_other_secondary_objectives_are_refused_before_anything_starts(tmp_path: Path) -> None:
    """Bug 5: a study of [val_acc, params_m] continued as [val_acc, latency_ms] would read params_m as latency
    in the Pareto front, --pick, export and report. Refused (with --allow-changes too:
    tests/test_fingerprint.py); nothing written."""
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    attrs = {
        studies.ATTR_METRIC: "val_acc",
        studies.ATTR_OBJECTIVES: ["val_acc", "params_m"],
        studies.ATTR_HPO_VERSION: "0.1.0",
    }
    _old_study(url, "mo", ["maximize", "minimize"], attrs, [0.9, 11.2])
    before = snapshot(url, "mo")
    cfg = tmp_path / "mo.yaml"
    cfg.write_text(MO.format(metrics="[val_acc, latency_ms]"))
    r = run_cli("sweep", str(cfg), "--storage", url, "--no-progress", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "study.metrics: study 'mo'" in line, line
    assert "'params_m'" in line and "'latency_ms'" in line
    assert snapshot(url, "mo") == before


# ------------------------------------------------------------------------------ the study, without Ray
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_under_the_lease_a_changed_config_is_refused_and_the_lease_given_back(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The check before Ray passed (the config changed in between, or another sweep recorded another one):
    the check under the lease refuses, writes nothing and leaves no lease behind."""
    url = _url(backend, tmp_path, request)
    text = tiny_sweep("d")
    ran = lease.new_lease()
    prepare_study(_cfg(tmp_path, url, text), mine=ran)  # a sweep that ran, and gave its lease up at the end
    release_lease(url, "d", ran["owner"])
    before = snapshot(url, "d")
    assert before["user"][FINGERPRINT]["values"]["train.dataset.classes"] == [0, 1, 2]

    changed = _cfg(tmp_path, url, text.replace("classes: [0, 1, 2]", "classes: [0, 1, 3]"))
    with pytest.raises(ConfigError, match=r"train\.dataset\.classes \[0, 1, 2\] -> \[0, 1, 3\]"):
        prepare_study(changed, mine=lease.new_lease())
    assert snapshot(url, "d") == before

    prepare_study(changed, mine=lease.new_lease(), allow_changes=True)
    after = snapshot(url, "d")
    assert after["user"][FINGERPRINT]["values"]["train.dataset.classes"] == [0, 1, 3]
    assert [c["field"] for c in after["user"][CHANGES][0]["changes"]] == ["train.dataset.classes"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_study_an_older_hpo_made_gets_a_fingerprint_without_refusal(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, tmp_path, request)
    attrs = {studies.ATTR_METRIC: "val_acc", studies.ATTR_HPO_VERSION: "0.1.0"}
    _old_study(url, "d", ["maximize"], attrs, [0.8])
    trials = snapshot(url, "d")["trials"]
    cfg = _cfg(tmp_path, url, tiny_sweep("d"))
    prepared = prepare_study(cfg, mine=lease.new_lease())  # nothing recorded to compare with: no refusal
    assert prepared.finished == 1
    after = snapshot(url, "d")
    assert after["trials"] == trials and CHANGES not in after["user"]
    assert after["user"][FINGERPRINT]["values"]["train.epochs"] == 1
    from hpo.sweep.prepare import refuse_if_changed

    refuse_if_changed(cfg)
    with pytest.raises(ConfigError, match=r"train\.epochs 1 -> 2"):  # from now on a change is noticed
        refuse_if_changed(_cfg(tmp_path, url, tiny_sweep("d").replace("epochs: 1", "epochs: 2")))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_nothing_is_written_to_a_study_before_its_lease_is_ours(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Bug 5, the race: a sweep that passed the busy check and then lost the lease to another wrote the
    study's metric, objectives and hpo version before it tried the lease."""
    url = _url(backend, tmp_path, request)
    attrs = {studies.ATTR_OBJECTIVES: ["val_acc", "params_m"]}  # e.g. left by Optuna, or by an older hpo
    _old_study(url, "mo", ["maximize", "minimize"], attrs, [0.9, 11.2])
    holder = lease.new_lease()  # another sweep, alive (this process), holds the study
    with opened(url) as storage:
        assert lease.acquire(url, storage, storage.get_study_id_from_name("mo"), holder) is None
    before = snapshot(url, "mo")
    cfg = _cfg(tmp_path, url, MO.format(metrics="[val_acc, latency_ms]"))
    with pytest.raises(StudyBusyError):
        prepare_study(cfg, mine=lease.new_lease())
    assert snapshot(url, "mo") == before


def test_the_fingerprint_is_json_as_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    prepare_study(_cfg(tmp_path, url, tiny_sweep("j")), mine=lease.new_lease())
    study = optuna.load_study(study_name="j", storage=url)
    record = study.user_attrs[FINGERPRINT]
    assert json.loads(json.dumps(record)) == record and record["format"] == 1
    assert study.user_attrs[studies.ATTR_METRIC] == "val_acc"
    assert [t for t in study.get_trials() if t.state == TrialState.RUNNING] == []


# ------------------------------------------------------------------------------ the README and the examples
_COUNT = {"one": 1, "two": 2, "three": 3, "four": 4}


def test_the_imagefolder_example_is_the_quickstart_with_the_lines_the_readme_shows() -> None:
    """README, "Fine-tuning your own images": the file is the quickstart with the snippet's lines changed (and
    nothing else), the snippet's lines appear in it verbatim, and no val_split overrides a val/ folder."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Fine-tuning your own images") :]
    m = re.search(
        r"`examples/imagefolder\.yaml` is the quickstart with (\w+) lines? changed:\n\n```yaml\n(.*?)```", section, re.S
    )
    assert m, "the README's sentence and snippet before the ImageFolder layout"
    snippet = m.group(2).splitlines()
    assert len(snippet) == _COUNT[m.group(1)]
    text = (REPO / "examples" / "imagefolder.yaml").read_text()
    lines = text.splitlines()
    train_at = lines.index("train:")
    for line in snippet:  # verbatim, and under train:
        assert line in lines and lines.index(line) > train_at, line
    changed = yaml.safe_load(textwrap.dedent("\n".join(snippet)))
    quickstart = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    expected = copy.deepcopy(quickstart)
    expected["train"].update(changed)
    assert yaml.safe_load(text) == expected
    assert "val_split" not in changed["dataset"] and "test_split" not in changed["dataset"]
    header = " ".join(line.lstrip("# ") for line in lines if line.startswith("#"))
    assert f"examples/quickstart.yaml with {m.group(1)} lines changed" in header
    assert "64/16/20" in header  # train, val, test: what the loader does without val_split and test_split
    assert f"({m.group(1)} lines differ)" in (REPO / "examples" / "quickstart.yaml").read_text()
