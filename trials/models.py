"""Image classifiers from torchvision with a new classification head, and where their weights come from.

The head is always new (fine-tuning): its final ``Linear`` gets ``num_classes`` outputs and a Dropout
with ``p == dropout`` right before it. Models whose classifier already has a Dropout right before the
final Linear (MobileNet, EfficientNet) keep that Dropout with its ``p`` set to ``dropout``; the others
(ResNet, RegNet, ConvNeXt) get ``Sequential(Dropout(dropout), Linear)`` in place of their final Linear.
Either way the head sits where torchvision's own final Linear was, so state-dict keys of the backbone
are unchanged and ImageNet weights load as torchvision ships them.

``timm/<name>`` and ``package.module:function`` models: ``trials.custom_models``.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from trials import custom_models
from trials.checkpoint import load_file, state_dict_from
from trials.errors import ModelError, one_line

#: ``train.weights``' default: the model's pretrained weights (torchvision's ``DEFAULT``, timm's for the name; a
#: user function's module as the function returns it).
DEFAULT_WEIGHTS = "DEFAULT"

MODEL_NAMES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_v2_s",
    "convnext_tiny",
    "convnext_small",
    "regnet_y_400mf",
)

# torchvision model class -> (path of the classifier's final Linear, path of the Dropout right before it).
_HEADS: dict[str, tuple[str, str | None]] = {
    "ResNet": ("fc", None),
    "RegNet": ("fc", None),
    "ConvNeXt": ("classifier.2", None),
    "MobileNetV2": ("classifier.1", "classifier.0"),
    "MobileNetV3": ("classifier.3", "classifier.2"),
    "EfficientNet": ("classifier.1", "classifier.0"),
}


def check_model_name(name: str) -> None:
    """Raise ModelError unless ``name`` is one of ``MODEL_NAMES``, a model timm knows (``timm/<name>``) or a
    user function that imports and is callable (``package.module:function``)."""
    if custom_models.is_timm(name) or custom_models.is_user_function(name):
        custom_models.check_custom_name(name)
    elif name not in MODEL_NAMES:
        raise ModelError(
            f"model: unknown model {name!r} (valid: {', '.join(MODEL_NAMES)}, timm/<name> or package.module:function)"
        )


def is_torchvision(name: str) -> bool:
    return not (custom_models.is_timm(name) or custom_models.is_user_function(name))


def is_local_path(weights: str) -> bool:
    """Whether ``weights`` names a file rather than a torchvision weights enum (``IMAGENET1K_V1``)."""
    return (
        "/" in weights
        or os.sep in weights
        or weights.startswith("~")
        or weights.endswith((".pt", ".pth", ".safetensors"))
    )


def weight_names(name: str) -> list[str]:
    """The torchvision weights names ``weights`` may take for model ``name`` (``DEFAULT`` included)."""
    return ["DEFAULT", *(w.name for w in torchvision.models.get_model_weights(name))]


def check_weights(name: str, weights: str | None, *, probe: Callable[[str], str | None] | None = None) -> None:
    """Cheap check that ``weights`` can be resolved for model ``name``: the file exists, or the enum name
    is valid and its file is in the torch hub cache or can be downloaded. Nothing is downloaded or loaded.

    An enum name whose file is not cached costs one HEAD request to the weights' URL, through ``probe``
    (default ``probe_url``: ``None`` when reachable, else the reason), bounded to a few seconds; offline
    that is a ModelError here, one line saying where to place the file, instead of a failed download on every
    trial. ``DEFAULT`` (the config's default) of a user function is the module the function returns: nothing
    to find.
    """
    check_model_name(name)
    if weights is None:
        return
    if weights == DEFAULT_WEIGHTS and custom_models.is_user_function(name):
        return
    if is_local_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"weights: file not found: {path}")
        return
    if custom_models.is_timm(name):
        custom_models.check_timm_weights(name, weights)
        return
    if custom_models.is_user_function(name):
        raise ModelError(
            f"weights: a user function's model takes DEFAULT (the module as it returns it), a local weights file "
            f"or null, got {weights!r}"
        )
    url = _weights_enum(name, weights).url
    cached = cached_weights_path(url)
    if cached.is_file():
        return
    why = (probe or probe_url)(url)
    if why is not None:
        shown = f"{weights} (pretrained, the default)" if weights == DEFAULT_WEIGHTS else weights
        raise ModelError(
            f"weights: {shown} for {name} is not cached at {cached} and cannot be downloaded ({why}); "
            f"place the file from {url} there (torch hub's cache: $TORCH_HOME/hub/checkpoints), or set "
            f"weights: /path/to/file.pt, or weights: null to train from random initialisation"
        )


def cached_weights_path(url: str) -> Path:
    """Where torchvision keeps (and looks for) the file of a weights ``url``: torch hub's ``checkpoints``
    folder (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def probe_url(url: str, timeout: float = 5.0) -> str | None:
    """``None`` if a HEAD request to ``url`` succeeds within ``timeout`` seconds, else why not (one line).

    The request runs in a daemon thread so a resolver that never answers (an air-gapped machine whose
    DNS server is unreachable) costs ``timeout`` too, not the resolver's own minute of retries.
    """
    answer: list[str | None] = []

    def head() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answer.append(None)
        except urllib.error.HTTPError as e:
            answer.append(f"HTTP {e.code} {e.reason}")
        except urllib.error.URLError as e:  # no network, DNS, proxy, TLS
            answer.append(one_line(e.reason) if isinstance(e.reason, BaseException) else str(e.reason))
        except (OSError, ValueError) as e:  # a socket timeout, a malformed URL
            answer.append(one_line(e))

    thread = threading.Thread(target=head, name="hpo-weights-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else f"no answer within {timeout:g}s"


def _weights_enum(name: str, weights: str) -> torchvision.models.WeightsEnum:
    """The torchvision weights called ``weights`` (``DEFAULT`` resolved) for model ``name``; ModelError if none."""
    if weights not in weight_names(name):
        raise ModelError(
            f"weights: unknown weights {weights!r} for {name} "
            f"(valid: {', '.join(weight_names(name))}, or a path to a .pt file)"
        )
    enum = torchvision.models.get_model_weights(name)
    return enum.DEFAULT if weights == "DEFAULT" else enum[weights]


def head_path(model: nn.Module) -> str:
    """Dotted path of the classification head that ``build_model`` replaces (``fc``, ``classifier.3``...); of
    a timm or user model, ``custom_models.head_path`` (``get_classifier()``, ``head``/``fc``/``classifier``...)."""
    if not callable(getattr(model, "get_classifier", None)) and type(model).__name__ in _HEADS:
        return _HEADS[type(model).__name__][0]
    return custom_models.head_path(model)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(backbone, head)`` parameters of a model from ``build_model``; every parameter is in exactly one."""
    head_ids = {id(p) for p in model.get_submodule(head_path(model)).parameters()}
    backbone: list[nn.Parameter] = []
    head: list[nn.Parameter] = []
    for p in model.parameters():
        (head if id(p) in head_ids else backbone).append(p)
    return backbone, head


def backbone_modules(model: nn.Module) -> list[nn.Module]:
    """All modules outside the head (used to keep a frozen backbone's BatchNorm in eval mode)."""
    head = set(model.get_submodule(head_path(model)).modules())
    return [m for m in model.modules() if m not in head]


def build_model(name: str, num_classes: int, *, dropout: float, weights: str | None) -> nn.Module:
    """Build model ``name`` (torchvision's, ``timm/<name>`` or ``package.module:function``) with a new
    ``num_classes``-way head.

    ``weights``: None for random initialisation; a torchvision weights name for that model
    (``DEFAULT``, ``IMAGENET1K_V1``...), downloaded into (or read from) the torch hub cache; or a local
    file: a raw state dict, an ``hpo-model/1`` file, a trial ``checkpoint.pt`` (or a ``.safetensors``
    file). From a file every key of the old head is dropped (the head is always new) and all other keys must
    match. A timm model takes ``DEFAULT`` (timm's cached pretrained weights) too; a user function a file, or
    ``DEFAULT``/None: the module as the function returns it.
    """
    check_model_name(name)
    if num_classes < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}")
    if not is_torchvision(name):
        from_file = weights is not None and is_local_path(weights)
        if weights is not None and not from_file:
            check_weights(name, weights)
        if custom_models.is_timm(name):
            model = custom_models.build_timm(name, num_classes, dropout=dropout, pretrained=weights == DEFAULT_WEIGHTS)
        else:
            model = custom_models.build_user(name, num_classes, dropout=dropout)
        if from_file:
            _load_backbone(model, name, str(weights))
        return model
    if weights is None or is_local_path(weights):
        model = torchvision.models.get_model(name, weights=None)
    else:
        model = _pretrained(name, weights)
    _replace_head(model, num_classes, dropout)
    if weights is not None and is_local_path(weights):
        _load_backbone(model, name, weights)
    return model


def _pretrained(name: str, weights: str) -> nn.Module:
    chosen = _weights_enum(name, weights)
    cached = cached_weights_path(chosen.url)
    try:
        return torchvision.models.get_model(name, weights=chosen)
    except OSError as e:  # URLError is an OSError: no network, DNS, proxy, read-only cache...
        raise ModelError(
            f"weights {name}/{chosen.name}: download failed ({one_line(e)}); offline? "
            f"place the file from {chosen.url} at {cached}, or set weights: null to train from random initialisation"
        ) from e
    except RuntimeError as e:  # a truncated or corrupt file in the cache
        raise ModelError(
            f"weights {name}/{chosen.name}: cannot load {cached} ({one_line(e)}); delete it and retry"
        ) from e


def _replace_head(model: nn.Module, num_classes: int, dropout: float) -> None:
    linear_path, dropout_path = _HEADS[type(model).__name__]
    old = model.get_submodule(linear_path)
    if not isinstance(old, nn.Linear):
        raise ModelError(f"{type(model).__name__}.{linear_path} is {type(old).__name__}, expected Linear")
    new: nn.Module = nn.Linear(old.in_features, num_classes)
    if dropout_path is None:
        new = nn.Sequential(nn.Dropout(dropout), new)
    else:
        drop = model.get_submodule(dropout_path)
        if not isinstance(drop, nn.Dropout):
            raise ModelError(f"{type(model).__name__}.{dropout_path} is {type(drop).__name__}, expected Dropout")
        drop.p = dropout
    parent, _, child = linear_path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _load_backbone(model: nn.Module, name: str, weights: str) -> None:
    path = Path(weights).expanduser()
    state, saved_for = _weights_file(path)
    prefix = head_path(model) + "."
    state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        made_by = f" (the file was saved for model {saved_for})" if saved_for and saved_for != name else ""
        raise ModelError(
            f"weights {path} do not fit {name}{made_by}: missing keys {_few(missing)}, "
            f"unexpected keys {_few(unexpected)}, wrong shapes {_few(wrong_shape)}"
        )
    model.load_state_dict(state, strict=False)


def _weights_file(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in weights file ``path`` and the model it was saved for (when the file says), read
    once per process while the file is unchanged: a warm worker's later trials skip the read and unpickle.
    ``load_state_dict`` copies out of the cached tensors, so no trial can change them."""
    try:
        stat = path.stat()
    except OSError as e:
        raise ModelError(f"weights file not found: {path}") from e
    return _read_weights(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_weights(path: str, mtime_ns: int, size: int) -> tuple[dict[str, torch.Tensor], str | None]:
    # (mtime_ns, size) are part of the key only: a rewritten file is read again. Errors are not cached.
    if path.endswith(".safetensors"):
        return _read_safetensors(path), None
    obj = load_file(path)
    state = state_dict_from(obj, path)
    saved_for = obj.get("config", {}).get("model") if isinstance(obj, dict) else None
    return state, saved_for


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file as load_safetensors
    except ImportError:
        raise ModelError(f"cannot load {path}: .safetensors files need the safetensors package") from None
    try:
        return dict(load_safetensors(path, device="cpu"))
    except Exception as e:  # a truncated or foreign file
        raise ModelError(f"cannot load {path}: {one_line(e)}") from e


def clear_weights_cache() -> None:
    """Forget the weights files read in this process."""
    _read_weights.cache_clear()


def _few(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "[]"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return "[" + ", ".join(keys[:n]) + more + "]"
