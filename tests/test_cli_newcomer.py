"""Small things a newcomer hits (issue 20): SQLite with a remote Ray refused up front, --debug after any
command, hpo status listing the failed trials first, the LICENSE, `make clean` keeping runs/
(the options' consistency across commands: tests/test_cli_consistency.py).
The CLI is driven as a real subprocess where the behaviour is the CLI's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
import typer.main
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo import study as studies
from hpo.cli import app
from hpo.cluster.session import is_remote_address
from storage import close_storage
from tests.conftest import REPO, run_cli


def _quickstart(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    shutil.copy(REPO / "examples" / "quickstart.yaml", cfg)
    return cfg


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--ray-address", "10.0.0.1:6379"], {}),
        ([], {"RAY_ADDRESS": "ray://head.example:10001"}),
    ],
)
def test_sqlite_with_a_remote_ray_is_refused_before_anything_is_written(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    cfg = _quickstart(tmp_path)
    r = run_cli("sweep", str(cfg), "--storage", "sqlite:///x.db", *args, "--no-progress", cwd=tmp_path, env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "SQLite" in lines[0] and "PostgreSQL" in lines[0] and "head node" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]  # no x.db, no study, no runs/


def test_remote_means_another_machine_may_hold_the_head() -> None:
    for local in (None, "", "local", "auto", "127.0.0.1:6379", "localhost:6379", "ray://localhost:10001", "[::1]:1"):
        assert not is_remote_address(local), local
    for remote in ("10.0.0.1:6379", "ray://head:10001", "head", "ray://10.1.2.3:10001"):
        assert is_remote_address(remote), remote


def test_every_command_takes_debug() -> None:
    root = typer.main.get_command(app)
    commands = dict(root.commands)  # type: ignore[attr-defined]
    commands.update({f"storage {n}": c for n, c in commands.pop("storage").commands.items()})
    for name, command in commands.items():
        assert any("--debug" in p.opts for p in command.params), name


def test_debug_after_the_command_shows_the_traceback(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    r = run_cli("status", "--study", "s", "--storage", storage, "--debug", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" in r.stderr and "error: storage" in r.stderr
    plain = run_cli("status", "--study", "s", "--storage", storage, cwd=tmp_path)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    helped = run_cli("sweep", "--help", env={"COLUMNS": "200"})
    assert helped.returncode == 0 and "--debug" in helped.stdout


def _study_with_failures(url: str) -> list[str]:
    """30 COMPLETE trials and 3 FAIL ones with reasons (numbers 5, 17, 29): the failures rank last by value."""
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr(studies.ATTR_METRIC, "val_acc")
    reasons = []
    for i in range(33):
        t = study.ask({"lr": FloatDistribution(1e-4, 1.0, log=True)})
        if i % 12 == 5:
            reasons.append(f"worker died on node n{i}")
            t.set_user_attr(studies.ATTR_FAIL_REASON, reasons[-1])
            study.tell(t, state=TrialState.FAIL)
        else:
            study.tell(t, 0.5 + i / 100)
    close_storage(study._storage)
    return reasons


def test_status_lists_the_failed_trials_and_their_reasons_before_the_limit_cuts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    reasons = _study_with_failures(url)
    r = run_cli("status", "--study", "s", "--storage", url, "--limit", "5", env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    for reason in reasons:
        assert reason in r.stdout
    rows = [line for line in r.stdout.splitlines() if "FAIL" in line or "COMPLETE" in line]
    assert [("FAIL" in line) for line in rows] == [True, True, True, False, False], r.stdout
    assert "the failed, then the best: 5 shown" in r.stdout
    assert "by state: complete 30, fail 3" in r.stdout

    js = run_cli("status", "--study", "s", "--storage", url, "--limit", "5", "--json")
    shown = json.loads(js.stdout)["rows"]
    assert [(row["number"], row["state"]) for row in shown[:3]] == [(5, "FAIL"), (17, "FAIL"), (29, "FAIL")]
    assert [row["number"] for row in shown[3:]] == [32, 31]  # then the best
    assert [row["reason"] for row in shown[:3]] == reasons


def test_the_license_file_is_the_one_pyproject_names() -> None:
    tomllib = pytest.importorskip("tomllib")
    license_ = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]["text"]
    heads = {"Apache-2.0": ["Apache License", "Version 2.0, January 2004"], "MIT": ["MIT License"]}
    lines = [line.strip() for line in (REPO / "LICENSE").read_text().splitlines() if line.strip()]
    assert lines[: len(heads[license_])] == heads[license_]
    assert "Copyright 2026 the hpo authors" in lines


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_clean_keeps_runs(tmp_path: Path) -> None:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "runs" / "prod").mkdir(parents=True)
    (tmp_path / "runs" / "prod" / "model.pt").write_bytes(b"a trained model")
    for name in ("hpo.db", "best.yaml"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".pytest_cache").mkdir()
    subprocess.run(["make", "-s", "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "runs"]
    assert (tmp_path / "runs" / "prod" / "model.pt").read_bytes() == b"a trained model"


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_pretrains_where_the_quickstart_reads_whatever_xdg_cache_home_says(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = subprocess.run(
        ["make", "-s", "--eval", "print-pretrained: ; @echo $(PRETRAINED)", "print-pretrained"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "elsewhere")},
        capture_output=True,
        text=True,
        check=True,
    )
    weights = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())["train"]["weights"]
    assert r.stdout.strip() == str(home / weights.removeprefix("~/"))
