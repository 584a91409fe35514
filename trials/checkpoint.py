"""Files that hold weights: atomic saves, the ``hpo-model/1`` model file, trial checkpoints, RNG states.

Everything written here loads with ``torch.load(..., weights_only=True)``: only tensors and plain
Python values (dicts, lists, str, int, float, bool, None), never pickled objects, so a file from an
untrusted source cannot run code when it is loaded.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from trials import storage_fs
from trials.config import TrainConfig
from trials.errors import ModelError, one_line

MODEL_FORMAT = "hpo-model/1"
CHECKPOINT_FORMAT = "hpo-checkpoint/1"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` (a local path or an fsspec URL: ``trials.storage_fs``) so that readers see the
    old file or the new one, never half of one."""
    storage_fs.save_torch(obj, path)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model``'s state dict (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_model(
    path: str | Path,
    model: torch.nn.Module,
    config: TrainConfig | Mapping[str, Any],
    *,
    num_classes: int,
    class_names: Sequence[str],
    metrics: Mapping[str, float],
) -> None:
    """Write a trained model as an ``hpo-model/1`` file (atomically).

    The file embeds the training config that made it, so it can be rebuilt (``build_model`` with
    ``weights: <path>``) and audited later.
    """
    cfg = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    atomic_save(
        {
            "format": MODEL_FORMAT,
            "model_state": cpu_state(model),
            "config": cfg,
            "num_classes": int(num_classes),
            "class_names": [str(c) for c in class_names],
            "metrics": {str(k): float(v) for k, v in metrics.items()},
        },
        path,
    )


def load_file(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU; a missing or unreadable file is a ModelError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, pickled objects refused by weights_only, ...
        raise ModelError(f"cannot load {path}: {one_line(e)}") from e


def load_model_file(path: str | Path) -> dict[str, Any]:
    """Read an ``hpo-model/1`` file written by ``save_model``; other files are a ModelError."""
    obj = load_file(path)
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ModelError(f"{path} is not an {MODEL_FORMAT} file (format: {found!r})")
    return obj


def state_dict_from(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights inside a loaded file: an ``hpo-model/1`` file, a trial checkpoint (its best
    epoch's weights), or a raw state dict (``{name: tensor}``, a ``module.`` prefix from DDP removed)."""
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        state = obj["model_state"]
    elif isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        state = obj.get("best_model_state") or obj["model_state"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise ModelError(f"{path} holds neither a state dict, an {MODEL_FORMAT} file nor a trial checkpoint")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (``weights_only``-loadable)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``rng_state`` captured (the CUDA part only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
