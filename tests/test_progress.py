"""What a sweep shows while it runs: plain lines when piped, the live view in a terminal (a real pty)."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo.progress import LineObserver, format_duration, format_params

pytestmark = []


def test_line_observer_prints_one_line_per_finished_trial() -> None:
    buf = io.StringIO()
    obs = LineObserver(buf, metric="val_acc")
    counts = {"COMPLETE": 1, "PRUNED": 1, "FAIL": 0, "RUNNING": 1}
    obs.trial_finished({"number": 3, "state": "PRUNED", "value": 0.5, "steps": 2, "params": {"lr": 0.01}}, counts, None)
    obs.trial_finished(
        {"number": 4, "state": "COMPLETE", "value": 0.9, "steps": 6, "params": {"lr": 0.001, "batch_size": 32}},
        counts,
        {"number": 4, "value": 0.9, "params": {}},
    )
    obs.trial_finished(
        {"number": 5, "state": "FAIL", "value": None, "reason": "worker died: x", "params": {}}, counts, None
    )
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("trial 3 PRUNED val_acc=0.5000 at epoch 2 [lr=0.01]")
    assert lines[1].startswith("trial 4 COMPLETE val_acc=0.9000 after 6 epochs [lr=0.001 batch_size=32]")
    assert "best #4 0.9000" in lines[1]
    assert "(worker died: x)" in lines[2]
    assert len(lines) == 3


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (75, "1m15s"), (3725, "1h02m")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_params() -> None:
    assert (
        format_params({"lr": 0.000123456, "batch_size": 32, "optimizer": "sgd"})
        == "lr=0.000123 batch_size=32 optimizer=sgd"
    )


@pytest.mark.slow
def test_a_terminal_gets_the_live_view(tmp_path: Path, pretrained: Path) -> None:
    """`hpo sweep` under a real pseudo-terminal draws Rich's live panel (cursor control, running trials, ETA)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "study: {name: tty, n_trials: 3}\nparallel: 2\n"
        f"train: {{weights: {pretrained}, epochs: 3, dataset: {{type: digits, classes: [5, 6, 7], "
        "max_train_samples: 90, max_val_samples: 30}}\n"
    )
    exe = Path(sys.executable).parent / "hpo"
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [str(exe), "sweep", str(cfg), "--storage", f"sqlite:///{tmp_path / 'tty.db'}"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tmp_path,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.time() + 300
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen[-2000:]
    assert "\x1b[" in screen  # cursor movement: a live display, not plain lines
    assert "finished 0/3" in screen or "finished 1/3" in screen
    assert "running 2" in screen or "running 1" in screen
    assert "elapsed" in screen
    assert "trial 0 COMPLETE" in screen or "trial 1 COMPLETE" in screen  # finished trials still get a line
