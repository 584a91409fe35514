"""``pruner: {type: asha}`` end to end, with the real CLI on PostgreSQL: a trial paused at a rung (WAITING with
``hpo:paused``, after its epoch at the rung), the driver killed (SIGKILL) while it is paused, and a second
``hpo sweep`` on the study that leaves nothing RUNNING and resumes it from its checkpoint (its intermediate
values go on from the next epoch, no epoch trained again) until it is COMPLETE.

Deterministic by construction: the study is made first with its trials enqueued, trial 0 with a learning rate
that trains (1e-3, on the digits 0-4 backbone) and the others with one that stays at chance (5.0); with
``min_resource: 2, reduction_factor: 3`` (one rung, at epoch 2 of 5) the first trial to reach epoch 2 is
always paused (nobody is promotable at a rung with fewer than 3 values), trial 0 is promoted once two worse
trials have reached it, and the trials at chance (tied, rank 1) are never in the top third of 4 trials: they
are given up, told PRUNED, their checkpoints deleted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo import study as studies
from storage import StorageError, opened
from tests.conftest import run_cli
from tests.fixtures_files import start_cli_sweep

EPOCHS = 5


def _config(path: Path, weights: Path, runs: Path, n_trials: int) -> Path:
    path.write_text(
        f"""
study: {{name: asha, n_trials: {n_trials}, sampler: {{name: random, seed: 0}}}}
search_space:
  lr: [1.0e-3, 5.0]
  batch_size: 32
  dropout: 0.0
  weight_decay: 0.0
  aug_strength: 0.0
pruner: {{type: asha, min_resource: 2, reduction_factor: 3}}
early_stopping: {{patience: null}}
parallel: 1
output_dir: {runs}
train:
  model: resnet18
  weights: {weights}
  dataset: {{type: digits, classes: [5, 6, 7, 8, 9], max_train_samples: 120, max_val_samples: 60}}
  epochs: {EPOCHS}
  checkpoint_every_s: 3600
"""
    )
    return path


def _paused(url: str) -> list[optuna.trial.FrozenTrial]:
    with contextlib.suppress(KeyError, StorageError), opened(url, connect_timeout=5) as storage:
        trials = storage.get_all_trials(storage.get_study_id_from_name("asha"), deepcopy=False)
        return [t for t in trials if studies.is_paused(t)]
    return []


def _wait_for_a_pause(url: str, proc: subprocess.Popen[str], timeout: float = 480) -> optuna.trial.FrozenTrial:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        paused = _paused(url)
        if paused:
            return paused[0]
        time.sleep(0.3)
    raise AssertionError("no trial was paused")


@pytest.mark.slow
@pytest.mark.postgres
def test_a_paused_trial_survives_a_killed_driver_and_resumes_from_its_checkpoint(
    tmp_path: Path, pg_url: str, pretrained: Path
) -> None:
    runs = tmp_path / "runs"
    cfg = _config(tmp_path / "asha.yaml", pretrained, runs, n_trials=4)
    study = optuna.create_study(study_name="asha", storage=pg_url, direction="maximize")
    for lr in (1.0e-3, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0):  # more than any sweep here creates: no trial is sampled
        study.enqueue_trial({"lr": lr})
    first = start_cli_sweep(cfg, pg_url, tmp_path, "asha")
    try:
        paused = _wait_for_a_pause(pg_url, first)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()

    # paused at the first rung, after its epoch there: WAITING, hpo:paused, its values and checkpoint kept
    assert paused.number == 0 and paused.state == TrialState.WAITING
    assert paused.system_attrs[studies.SYS_PAUSED] == 2
    assert paused.user_attrs[studies.ATTR_PAUSED_AT] == 2
    assert sorted(paused.intermediate_values) == [1, 2]
    checkpoint = Path(paused.user_attrs[studies.ATTR_CHECKPOINT_DIR], "checkpoint.pt")
    assert checkpoint.is_file()

    env = {**os.environ, "HPO_RAY_TMPDIR": f"/tmp/hpo-asha-{uuid.uuid4().hex[:8]}"}
    second = run_cli("sweep", str(cfg), "--storage", pg_url, "--no-progress", cwd=tmp_path, env=env, timeout=900)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "Traceback" not in out
    assert "resuming trial 0 after epoch 2 (promoted)" in out, out

    trials = optuna.load_study(study_name="asha", storage=pg_url).get_trials()
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]  # the killed driver's orphan was reaped
    assert not [t.number for t in trials if studies.is_paused(t)]  # promoted, or given up at the end
    best = trials[0]
    # resumed from its checkpoint, not retrained: every epoch once, the last run resumed after a saved epoch
    assert best.state == TrialState.COMPLETE, (best.state, best.user_attrs)
    assert sorted(best.intermediate_values) == list(range(1, EPOCHS + 1))
    assert best.user_attrs[studies.ATTR_RESUMED_FROM] >= 2
    assert best.user_attrs[studies.ATTR_EPOCHS_RUN] == EPOCHS
    assert best.system_attrs[studies.SYS_PAUSED] >= 2  # last paused at a rung
    given_up = [t for t in trials if t.state == TrialState.PRUNED]
    assert given_up, [(t.number, t.state) for t in trials]
    for t in given_up:  # told PRUNED with the reason, their checkpoints deleted
        assert "not promoted" in t.user_attrs[studies.ATTR_PRUNED_REASON]
        assert t.value == t.intermediate_values[max(t.intermediate_values)]
        assert not Path(t.user_attrs[studies.ATTR_CHECKPOINT_DIR], "checkpoint.pt").exists()
    assert not list(runs.rglob("checkpoint.pt"))  # a finished trial's checkpoint goes too

    st = run_cli("status", "--study", "asha", "--storage", pg_url, "--json")
    assert st.returncode == 0, st.stderr
