"""A storage password planted in the URL never shows: not in output, logs, errors, exports, reports,
status, or the dashboard's command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy

from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "Pl4nted-S3cret-" + uuid.uuid4().hex[:6]


def _with_password(url: str, database: str | None = None) -> str:
    u = sqlalchemy.engine.make_url(url).set(password=SECRET)
    if database:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def _grep_tree(root: Path) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                if SECRET.encode() in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                continue
    return hits


def test_password_never_shows(tmp_path: Path, pg_url: str, pretrained: Path) -> None:
    url = _with_password(pg_url)  # the test server trusts local connections: the password is sent, and ignored
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "study: {name: sec, n_trials: 2}\nparallel: 2\n"
        f"train: {{weights: {pretrained}, epochs: 1, dataset: {{type: digits, classes: [5, 6, 7], "
        "max_train_samples: 60, max_val_samples: 30}}\n"
    )
    ray_dir = Path("/tmp") / f"hpo-sec-{uuid.uuid4().hex[:6]}"
    outputs = []
    r = run_cli(
        "sweep", str(cfg), "--storage", url, "--no-progress", cwd=tmp_path, env={"HPO_RAY_TMPDIR": str(ray_dir)}
    )
    assert r.returncode == 0, r.stdout + r.stderr
    outputs.append(r.stdout + r.stderr)
    for args in (
        ["status", "--study", "sec", "--storage", url],
        ["status", "--study", "sec", "--storage", url, "--json"],
        ["studies", "--storage", url],
        ["export", "--study", "sec", "--storage", url, "-o", str(tmp_path / "best.yaml"), "--print"],
        ["report", "--study", "sec", "--storage", url, "-o", str(tmp_path / "report.html")],
        ["status", "--study", "missing", "--storage", url],  # errors too
        ["status", "--study", "sec", "--storage", _with_password(pg_url, "no_such_db")],
        ["sweep", str(cfg), "--storage", _with_password(pg_url).replace("127.0.0.1", "127.0.0.1:1"), "--no-progress"],
        ["--debug", "status", "--study", "missing", "--storage", url],  # even the traceback
    ):
        res = run_cli(*args, cwd=tmp_path)
        outputs.append(res.stdout + res.stderr)
    assert all(SECRET not in o for o in outputs), next(o for o in outputs if SECRET in o)
    assert "***" in outputs[-3] or "no_such_db" in outputs[-3]
    assert _grep_tree(tmp_path) == []  # exported YAML, report, checkpoints, logs
    assert ray_dir.is_dir() and _grep_tree(ray_dir) == []  # Ray's session logs of the sweep

    # the dashboard takes the URL from the environment: nothing in its command line, output or pages
    port = 18000 + os.getpid() % 1000
    exe = Path(sys.executable).parent / "hpo"
    proc = subprocess.Popen(
        [str(exe), "dashboard", "--port", str(port)],
        env={**os.environ, "HPO_STORAGE": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = ""
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.3)
        assert '"sec"' in body
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert SECRET not in cmdline and SECRET not in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert SECRET not in out
