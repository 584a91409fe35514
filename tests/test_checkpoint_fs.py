"""Checkpoints anywhere every node reaches: ``trials.storage_fs`` on a local folder, a ``file://`` URL (fsspec's
local backend, standing in for object storage) and ``memory://`` (fsspec's whole-object path, in this process);
an ``output_dir`` with an unknown scheme refused before anything is written; and a SIGTERM mid-epoch, which
saves the run after the batch in flight so that the next ``fit`` goes on from there."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch

from hpo.config import load_sweep_config
from hpo.coordinator.paused import checkpoint_bytes, remove_checkpoint
from hpo.errors import ConfigError
from hpo.views.delete import remove_folders
from tests.conftest import run_cli
from tests.trials.conftest import TINY
from trials import preemption, storage_fs
from trials.config import TrainConfig, merge_dotted
from trials.paths import CHECKPOINT_NAME
from trials.train import fit


@pytest.fixture(params=["path", "file-url", "memory-url"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A trial's checkpoint folder, as a plain path or a URL."""
    if request.param == "path":
        return str(tmp_path / "s" / "trial-00000")
    if request.param == "file-url":
        return f"file://{tmp_path}/s/trial-00000"
    return f"memory://hpo-test-{uuid.uuid4().hex[:8]}/s/trial-00000"


def test_save_load_copy_size_and_delete(folder: str, tmp_path: Path) -> None:
    ckpt = storage_fs.join(folder, CHECKPOINT_NAME)
    assert not storage_fs.exists(ckpt) and storage_fs.folder_bytes(folder) == 0
    storage_fs.make_folder(folder)
    storage_fs.save_torch({"v": torch.arange(3)}, ckpt)
    storage_fs.save_torch({"v": torch.arange(4)}, ckpt)  # replaced whole
    assert storage_fs.exists(ckpt)
    assert torch.equal(storage_fs.load_torch(ckpt)["v"], torch.arange(4))
    if not folder.startswith("memory://"):  # the temporary file of an atomic write is gone
        local = storage_fs.local_path(folder)
        assert local is not None and os.listdir(local) == [CHECKPOINT_NAME]
    assert checkpoint_bytes(folder) == len(storage_fs.read_bytes(ckpt)) > 0

    retry = folder.replace("trial-00000", "trial-00001")
    assert storage_fs.copy(ckpt, storage_fs.join(retry, CHECKPOINT_NAME))
    assert torch.equal(storage_fs.load_torch(storage_fs.join(retry, CHECKPOINT_NAME))["v"], torch.arange(4))
    assert not storage_fs.copy(storage_fs.join(folder, "nothing.pt"), storage_fs.join(retry, "x.pt"))

    remove_checkpoint(folder)  # what asha does with a paused trial it gives up
    assert not storage_fs.exists(ckpt) and checkpoint_bytes(folder) == 0
    remove_checkpoint(folder)  # twice: nothing left, no error

    removed, missing, skipped = remove_folders([retry, folder])  # hpo delete --checkpoints
    assert removed[0] == retry and skipped == []
    assert not storage_fs.exists(storage_fs.join(retry, CHECKPOINT_NAME))
    assert removed[1:] + missing == [folder]  # emptied: gone already (a local folder), or removed now


def test_a_failed_write_keeps_the_old_file(folder: str) -> None:
    ckpt = storage_fs.join(folder, CHECKPOINT_NAME)
    storage_fs.save_torch({"v": 1}, ckpt)

    def half(f: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        storage_fs.write(ckpt, half)
    assert storage_fs.load_torch(ckpt) == {"v": 1}


def test_a_url_is_checked_for_its_scheme_without_writing() -> None:
    assert storage_fs.protocol_problem("/plain/path") is None
    assert storage_fs.protocol_problem("file:///shared/runs") is None
    problem = storage_fs.protocol_problem("nosuchfs://bucket/runs")
    assert problem is not None and "unknown URL scheme 'nosuchfs'" in problem


def test_a_bad_output_dir_is_one_config_error_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_dir: nosuchfs://bucket/runs\n")
    with pytest.raises(ConfigError) as info:
        load_sweep_config(cfg)
    message = str(info.value)
    assert "\n" not in message and "output_dir" in message and "'nosuchfs://bucket/runs'" in message
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"output_dir: file://{tmp_path}/runs\n")
    assert load_sweep_config(ok).output_dir == f"file://{tmp_path}/runs"


def test_the_cli_refuses_a_bad_output_dir_before_writing_anything(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("study: {name: fs, n_trials: 1}\noutput_dir: nosuchfs://bucket/runs\n")
    r = run_cli("sweep", str(cfg), "--storage", f"sqlite:///{tmp_path}/hpo.db", "--no-progress", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "output_dir" in lines[0] and "nosuchfs://bucket/runs" in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no database, no runs folder


def _tiny(**changes: object) -> TrainConfig:
    return TrainConfig.from_dict(merge_dotted(TINY, {"epochs": 3, **changes}))


def _sigterm_after(epoch: int) -> Callable[[int, Mapping[str, float]], str]:
    """A reporter that sends this process a SIGTERM when ``epoch`` is reported (then training goes on)."""

    def report(e: int, metrics: Mapping[str, float]) -> str:
        if e == epoch:
            os.kill(os.getpid(), signal.SIGTERM)
        return "continue"

    return report


def test_a_sigterm_mid_epoch_saves_after_the_batch_in_flight_and_the_next_fit_goes_on(tmp_path: Path) -> None:
    """A checkpoint every hour: without the SIGTERM there would be none to resume. With it, the run is saved one
    batch into epoch 2 (in a ``file://`` folder) and a second ``fit`` goes on from the next batch, reaching the
    same curve as a run that was never stopped (in-memory data, no loader workers: the same batches)."""
    config = _tiny(checkpoint_every_s=3600)
    folder = f"file://{tmp_path}/trial-00000"
    logs: list[str] = []
    with preemption.checkpoint_on_sigterm(), pytest.raises(preemption.Preempted, match="batch 1 of epoch 2"):
        fit(config, _sigterm_after(1), folder, num_threads=1, log=logs.append)
    assert signal.getsignal(signal.SIGTERM) is not preemption._flag  # the handler is put back
    saved = storage_fs.load_torch(storage_fs.join(folder, CHECKPOINT_NAME))
    assert saved["epoch"] == 1 and saved["partial"]["epoch"] == 2 and saved["partial"]["batches"] == 1

    resumed = fit(config, None, folder, num_threads=1, log=logs.append)
    assert any("after epoch 1, 1 batches into epoch 2" in line for line in logs), logs
    assert resumed.status == "completed" and resumed.resumed_from_epoch == 1 and resumed.epochs_run == 3

    straight = fit(config, None, None, num_threads=1)
    for a, b in zip(resumed.history, straight.history, strict=True):
        for key in ("val_loss", "train_loss", "val_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)


def test_outside_the_context_a_run_is_not_stopped() -> None:
    """``fit`` asks only a flag the context's handler sets: without it nothing stops a run part-way."""
    assert not preemption.requested()
    result = fit(_tiny(epochs=1), None, None, num_threads=1)
    assert result.status == "completed"
