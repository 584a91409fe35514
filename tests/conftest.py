"""Shared fixtures: a fresh PostgreSQL database per session (real server over TCP), a real local Ray,
and a helper that runs the real ``hpo`` CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgcluster import PrivateCluster, available

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("HPO_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Ray workers started from these tests must import tests.workloads.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _pg_reachable() -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(
            PG_ADMIN, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 5}
        )
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as e:  # any failure means: no server to test against
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"


def _db_url(name: str) -> str:
    from storage.postgres import database_url

    return database_url(PG_ADMIN, name)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL; skips (fails under CI=true) when there is none."""
    why = _pg_reachable()
    if why:
        message = f"PostgreSQL not reachable at {PG_ADMIN} ({why}); start it with `make pg` or set HPO_TEST_PG"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return PG_ADMIN


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from storage.postgres import create_database, drop_database

    url = _db_url(f"hpo_test_{uuid.uuid4().hex[:12]}")
    create_database(url)
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def pg_session_url(pg_server: str) -> Iterator[str]:
    """One fresh PostgreSQL database shared by the session's tests (each uses its own study names)."""
    from storage.postgres import create_database, drop_database

    url = _db_url(f"hpo_session_{uuid.uuid4().hex[:12]}")
    create_database(url)
    yield url
    drop_database(url)


@pytest.fixture
def peak_connections() -> type:
    from storage.postgres import PeakConnections

    return PeakConnections


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real local Ray for in-process sweeps (2 CPUs, like this machine), shut down at the end."""
    import ray

    temp = Path("/tmp") / f"hpo-test-ray-{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    yield
    ray.shutdown()


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``hpo`` command (this interpreter's console script) and capture its output."""
    full_env = {**os.environ, **(env or {})}
    exe = Path(sys.executable).parent / "hpo"
    cmd = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "hpo.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, input=input_text)


@pytest.fixture
def cli() -> object:
    return run_cli


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backbone pretrained on digits 0-4 by the real `hpo train` (small and short: a test fixture). Made once
    per test run: pytest-xdist workers share it (the first to take the lock trains it)."""
    import fcntl

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each xdist worker's own
    out = shared / "pretrained"
    out.mkdir(exist_ok=True)
    with open(shared / "pretrained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model = out / "run" / "model.pt"
        if not model.is_file():
            cfg = out / "pretrain.yaml"
            cfg.write_text(
                "train:\n  model: resnet18\n  weights: null\n"
                "  dataset: {type: digits, classes: [0, 1, 2, 3, 4], max_train_samples: 300, max_val_samples: 100}\n"
                "  epochs: 2\n  lr: 0.003\n  batch_size: 64\n  aug_strength: 0.1\n  early_stopping: {patience: null}\n"
            )
            r = run_cli("train", str(cfg), "--output", str(out / "run"), timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
    assert model.is_file()
    return model


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    """A PostgreSQL server of the test's own (database ``hpo``), for tests that stop and restart it."""
    why = available()
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"cannot start a private PostgreSQL: {why}")
        pytest.skip(f"cannot start a private PostgreSQL: {why}")
    cluster = PrivateCluster()
    from storage.postgres import create_database

    create_database(cluster.url("hpo"))
    yield cluster
    cluster.destroy()
