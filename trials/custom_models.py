"""Models that are not one of torchvision's: ``timm/<name>`` (the optional ``timm`` package) and a user
function ``package.module:function``.

``timm/<name>`` builds ``timm.create_model(name, num_classes=..., drop_rate=dropout)``: the head is new
(``num_classes`` outputs) and ``dropout`` is timm's own ``drop_rate``, the dropout timm applies right
before the classifier. ``<name>`` may carry a pretrained tag (``timm/resnet18.a1_in1k``). The head, for
``freeze_backbone_epochs`` and ``backbone_lr_mult``, is the module ``get_classifier()`` returns.
``weights: DEFAULT`` loads timm's pretrained weights for the name, only from a cache (Hugging Face hub's
or torch hub's): nothing is downloaded.

``package.module:function`` is called as ``function(num_classes, dropout=dropout)`` when it has a
parameter called ``dropout``, else as ``function(num_classes)`` and hpo puts ``Dropout(dropout)`` right
before the head. It must return an ``nn.Module`` whose head is new. The head is, in this order: what
``get_classifier()`` returns, the attribute ``head``, ``fc`` or ``classifier``, or the last ``nn.Linear``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from trials.errors import ModelError, one_line

TIMM_PREFIX = "timm/"
HEAD_ATTRIBUTES = ("head", "fc", "classifier")


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def is_user_function(name: str) -> bool:
    return ":" in name and not is_timm(name)


def check_custom_name(name: str) -> None:
    """ModelError unless ``name`` is a timm model timm knows, or a user function that imports, exists,
    is callable and takes ``num_classes``. Imports the module (its top level runs), builds nothing."""
    if is_timm(name):
        _timm_arch(name)
    else:
        user_function(name)


# ---------------------------------------------------------------------------------------------------
# timm


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ModelError("model: timm models need the timm package (pip install 'hpo[timm]' or timm)") from None
    return timm


def _timm_arch(name: str) -> str:
    """The timm model name (with its pretrained tag, if any) of ``timm/<name>``; ModelError if unknown."""
    timm = _timm()
    arch = name[len(TIMM_PREFIX) :]
    if not arch or not timm.models.is_model(arch):
        close = difflib.get_close_matches(arch.partition(".")[0], timm.list_models(), n=3)
        hint = f" (similar: {', '.join(TIMM_PREFIX + c for c in close)})" if close else ""
        raise ModelError(f"model: timm has no model {arch!r}{hint}, got {name!r}")
    return arch


def timm_cached_weights(name: str) -> Path | None:
    """The file of timm's pretrained weights for ``timm/<name>`` if it is in a cache (Hugging Face hub's
    cache, then torch hub's ``checkpoints`` folder), else None. Nothing is downloaded."""
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(_timm_arch(name))
    if cfg is None:
        return None
    if cfg.file and Path(cfg.file).is_file():
        return Path(cfg.file)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    if cfg.url:
        from trials.models import cached_weights_path

        path = cached_weights_path(cfg.url)
        if path.is_file():
            return path
    return None


def check_timm_weights(name: str, weights: str) -> None:
    """``weights`` other than a local file: only ``DEFAULT``, and only when its file is cached."""
    if weights != "DEFAULT":
        raise ModelError(
            f"weights: a timm model takes DEFAULT (timm's pretrained weights for the name; a tag picks others: "
            f"timm/resnet18.a1_in1k), a local .pt/.pth/.safetensors file or null, got {weights!r}"
        )
    if timm_cached_weights(name) is None:
        cfg = _timm().models.get_pretrained_cfg(_timm_arch(name))
        where = f"Hugging Face hub {cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id else "timm"
        raise ModelError(
            f"weights: DEFAULT for {name} is not cached and hpo downloads nothing (from {where}); on a machine "
            f"online run python -c \"import timm; timm.create_model('{_timm_arch(name)}', pretrained=True)\" "
            f"and copy its cache (HF_HOME) here, or save the state dict to a .pt file and set weights to its path, "
            f"or set weights: null to train from random initialisation"
        )


def build_timm(name: str, num_classes: int, *, dropout: float, pretrained: bool) -> nn.Module:
    """``timm.create_model`` with a new ``num_classes``-way head and ``drop_rate=dropout``; ``pretrained``
    loads the cached DEFAULT weights (ModelError when not cached), the head re-initialised."""
    timm = _timm()
    arch = _timm_arch(name)
    options: dict[str, Any] = {"num_classes": num_classes, "drop_rate": dropout}
    if pretrained:
        check_timm_weights(name, "DEFAULT")
        options.update(pretrained=True, pretrained_cfg_overlay={"file": str(timm_cached_weights(name))})
    try:
        model: nn.Module = timm.create_model(arch, **options)
    except TypeError as e:  # a model class without drop_rate
        raise ModelError(f"model: timm cannot build {arch!r} ({one_line(e)}), got {name!r}") from e
    except (OSError, RuntimeError) as e:  # a truncated or corrupt cached file
        raise ModelError(f"weights: cannot load timm's DEFAULT weights for {name} ({one_line(e)})") from e
    if pretrained:  # timm keeps a pretrained classifier of the same size (1000 classes): the head is always new
        for m in model.get_submodule(head_path(model)).modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return model


# ---------------------------------------------------------------------------------------------------
# A user function


def user_function(name: str) -> Callable[..., Any]:
    """The callable ``package.module:function`` names (a dotted attribute path after ``:`` is allowed)."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in (*module_name.split("."), *attr.split("."))):
        raise ModelError(f"model: a user model is package.module:function, got {name!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or anything its top level raises
        raise ModelError(
            f"model: cannot import {module_name} ({one_line(e)}): is it on PYTHONPATH (the Ray workers' too)?, "
            f"got {name!r}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"model: {module_name} has no attribute {attr!r}, got {name!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"model: {module_name}.{attr} is not callable ({type(obj).__name__}), got {name!r}")
    _call_args(name, obj, 2, 0.0)  # the signature fits: checked before anything runs
    return obj


def _call_args(name: str, fn: Callable[..., Any], num_classes: int, dropout: float) -> dict[str, Any]:
    """Keyword arguments of the call: ``num_classes`` (positional unless the function names it) and
    ``dropout`` when the function has a parameter of that name."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins: try the documented call
        return {"num_classes": num_classes}
    params = sig.parameters
    kwargs: dict[str, Any] = {"dropout": dropout} if _by_name(params, "dropout") else {}
    args: tuple[Any, ...] = ()
    if _by_name(params, "num_classes"):
        kwargs["num_classes"] = num_classes
    else:
        args = (num_classes,)
    try:
        sig.bind(*args, **kwargs)
    except TypeError:
        raise ModelError(
            f"model: {name} must take num_classes, as f(num_classes: int, dropout: float) or f(num_classes) "
            f"(its signature: {sig}), got {name!r}"
        ) from None
    return {"_args": args, **kwargs}


def _by_name(params: Any, name: str) -> bool:
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def build_user(name: str, num_classes: int, *, dropout: float) -> nn.Module:
    """Call the user function; without a ``dropout`` parameter, ``Dropout(dropout)`` goes before its head."""
    fn = user_function(name)
    kwargs = _call_args(name, fn, num_classes, dropout)
    args = kwargs.pop("_args", ())
    try:
        model = fn(*args, **kwargs)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"model: {name}({num_classes}) raised {one_line(e)}, got {name!r}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"model: {name} returned a {type(model).__name__}, not a torch.nn.Module, got {name!r}")
    if "dropout" not in kwargs:
        path = head_path(model)
        parent, _, child = path.rpartition(".")
        wrapped = nn.Sequential(nn.Dropout(dropout), model.get_submodule(path))
        setattr(model.get_submodule(parent) if parent else model, child, wrapped)
    return model


# ---------------------------------------------------------------------------------------------------
# The head of a model that is not torchvision's


def head_path(model: nn.Module) -> str:
    """Dotted path of the head: ``get_classifier()`` (timm), else the attribute ``head``/``fc``/``classifier``,
    else the last ``nn.Linear``; ModelError if none."""
    named = list(model.named_modules())
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        found = next((path for path, m in named if m is head and path), None)
        if found:
            return found
    for attr in HEAD_ATTRIBUTES:
        if isinstance(getattr(model, attr, None), nn.Module):
            return attr
    linears = [path for path, m in named if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    raise ModelError(
        f"model class {type(model).__name__} has no head hpo can find: give it get_classifier(), an attribute "
        f"{'/'.join(HEAD_ATTRIBUTES)}, or a last nn.Linear"
    )
