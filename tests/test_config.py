"""Config validation: a table of bad inputs, through the library and through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.config import load_sweep_config, load_train_file
from hpo.errors import ConfigError
from hpo.space import trial_config
from tests.conftest import run_cli
from trials.config import TrainConfig

GOOD = """
study: {name: good, n_trials: 3, sampler: {name: random, seed: 1}}
search_space:
  lr: {low: 1e-4, high: 1e-1, log: true}
  batch_size: [16, 32]
  label_smoothing: [0.0, 0.1]
  early_stopping.patience: {low: 1, high: 3}
pruner: {n_startup_trials: 2}
early_stopping: {patience: 2}
train: {epochs: 3, image_size: 32, dataset: {type: digits, classes: [5, 6, 7, 8, 9]}}
"""

# (name, yaml, extra CLI args, fragment the one-line message must contain)
BAD = [
    ("unknown key", "study: {n_trials: 2}\nsearch_spaces: {}\n", [], "search_spaces: unknown key"),
    ("unknown nested key", "train: {epochs: 2, colour: red}\n", [], "train.colour: unknown key"),
    ("low > high", "search_space:\n  lr: {low: 0.1, high: 0.01}\n", [], "search_space.lr: low must be less than high"),
    ("negative lr", "search_space:\n  lr: -0.1\n", [], "train.lr must be > 0"),
    (
        "negative checkpoint interval",
        "train: {checkpoint_every_s: -5}\n",
        [],
        "train.checkpoint_every_s: must be a number of seconds >= 0 (0: after every epoch), got -5",
    ),
    (
        "log range with 0",
        "search_space:\n  weight_decay: {low: 0, high: 0.1, log: true}\n",
        [],
        "search_space.weight_decay.low: must be > 0 for a log range, got 0",
    ),
    (
        "empty choices",
        "search_space:\n  batch_size: {choices: []}\n",
        [],
        "search_space.batch_size.choices: must be a non-empty list",
    ),
    ("bad sampler", "study: {sampler: {name: bayes}}\n", [], "study.sampler.name"),
    ("bad choice for a str field", "search_space:\n  optimizer: [adamw, adam]\n", [], "'adam'"),
    (
        "missing dataset path",
        "train: {weights: null, dataset: {type: imagefolder, path: /nonexistent/flowers}}\n",
        [],
        "/nonexistent/flowers",
    ),
    (
        "unreachable storage",
        "study: {n_trials: 2}\ntrain: {weights: null}\n",
        ["--storage", "postgresql+psycopg2://hpo:Pl4nted@127.0.0.1:1/hpo"],
        "127.0.0.1",
    ),
    (
        "malformed URL",
        "study: {n_trials: 2}\ntrain: {weights: null}\n",
        ["--storage", "postgres//nonsense"],
        "malformed storage URL",
    ),
    (
        "unsupported backend",
        "study: {n_trials: 2}\ntrain: {weights: null}\n",
        ["--storage", "redis://localhost/0"],
        "unsupported storage backend",
    ),
    ("YAML syntax error", "study: {n_trials: 2\n", [], "YAML syntax error at line"),
    ("duplicate key", "parallel: 1\nparallel: 2\n", [], "duplicate key 'parallel'"),
    ("n_trials 0", "study: {n_trials: 0}\n", [], "study.n_trials"),
    ("n_trials 0 from the flag", "study: {n_trials: 2}\n", ["--n-trials", "0"], "study.n_trials"),
    ("parallel 0", "parallel: 0\n", [], "parallel: Input should be greater than or equal to 1, got 0"),
    ("parallel 0 from the flag", "study: {n_trials: 2}\n", ["--parallel", "0"], "parallel"),
    ("wrong type", "study: {n_trials: many}\n", [], "study.n_trials"),
    ("searched and fixed twice", "train: {lr: 0.1}\n", [], "train.lr"),
    ("contradicting direction", "study: {metric: val_loss, direction: maximize}\n", [], "contradicts"),
    ("not a mapping", "- a\n- b\n", [], "must be a YAML mapping"),
    ("empty file", "", [], "file is empty"),
    ("unicode study name", "study: {name: 'ünï cødé'}\n", [], "study.name"),
    ("huge number", "study: {n_trials: 100000000000000000000000}\n", [], "study.n_trials"),
    ("fractional GPUs above one", "resources: {gpus_per_trial: 1.5}\n", [], "resources.gpus_per_trial"),
    (
        "unknown amp mode",
        "train: {amp: fp32}\n",
        [],
        "train.amp: Input should be 'auto', 'bf16', 'fp16' or 'off', got 'fp32'",
    ),
    (
        "bad cpus_per_trial",
        "resources: {cpus_per_trial: many}\n",
        [],
        "resources.cpus_per_trial: must be 'auto' or a number of CPUs above 0 and at most 1024, got 'many'",
    ),
]


def test_good_config_loads_with_defaults_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    cfg = load_sweep_config(path)
    assert cfg.storage == "sqlite:///hpo.db"
    assert cfg.study.direction == "maximize"
    assert cfg.pruner.n_startup_trials == 2 and cfg.pruner.n_warmup_steps == 2
    assert cfg.base_train.early_stopping.patience == 2
    assert set(cfg.space.distributions) == {
        "lr",
        "batch_size",
        "dropout",
        "weight_decay",
        "aug_strength",
        "label_smoothing",
        "early_stopping.patience",
    }
    params = {"lr": 0.01, "batch_size": 16, "early_stopping.patience": 3, "dropout": 0.1}
    trial = TrainConfig.from_dict(trial_config(cfg.base_train.to_dict(), cfg.space.fixed, params))
    assert trial.lr == 0.01 and trial.early_stopping.patience == 3 and trial.dataset.classes == (5, 6, 7, 8, 9)
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///env.db")
    assert load_sweep_config(path).storage == "sqlite:///env.db"
    over = load_sweep_config(path, storage="sqlite:///flag.db", **{"study.n_trials": 9, "study.name": "other"})
    assert (over.storage, over.study.n_trials, over.study_name) == ("sqlite:///flag.db", 9, "other")
    unnamed = tmp_path / "my sweep.yaml"
    unnamed.write_text("study: {n_trials: 2}\n")
    assert load_sweep_config(unnamed).study_name == "my-sweep"


@pytest.mark.parametrize(
    ("name", "text", "args", "fragment"), [b for b in BAD if not b[2]], ids=[b[0] for b in BAD if not b[2]]
)
def test_library_rejects_bad_configs(tmp_path: Path, name: str, text: str, args: list[str], fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    if name == "missing dataset path":
        from hpo.sweep import preflight

        with pytest.raises(ConfigError, match=fragment):
            preflight(load_sweep_config(path))
        return
    with pytest.raises(ConfigError) as info:
        load_sweep_config(path)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message


@pytest.mark.slow
def test_cli_rejects_bad_input_with_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    """Every case: exit 2, one line on stderr naming the field or value, no traceback, no database written."""
    failures = []
    for name, text, args, fragment in BAD:
        case = tmp_path / name.replace(" ", "_")
        case.mkdir()
        (case / "cfg.yaml").write_text(text)
        storage = ["--storage", f"sqlite:///{case / 'study.db'}"] if not args or args[0] != "--storage" else []
        r = run_cli("sweep", "cfg.yaml", *storage, *args, "--no-progress", cwd=case, timeout=120)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        problems = []
        if r.returncode != 2:
            problems.append(f"exit {r.returncode}")
        if "Traceback" in r.stderr or len(lines) != 1:
            problems.append(f"stderr not one line: {r.stderr!r}")
        elif fragment not in lines[0]:
            problems.append(f"{fragment!r} not in {lines[0]!r}")
        if "Pl4nted" in r.stdout + r.stderr:
            problems.append("password printed")
        if (case / "study.db").exists() or (case / "hpo.db").exists():
            problems.append("a database file was written")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


def test_train_file_round_trip_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("train: {epochs: 2, lr: 0.01}\n")
    assert load_train_file(p).train.lr == 0.01
    p.write_text("train: {epochs: 2}\nprovenance: {study: x}\n")
    with pytest.raises(ConfigError, match=r"provenance\.trial: required field is missing"):
        load_train_file(p)
    p.write_text("version: 2\ntrain: {}\n")
    with pytest.raises(ConfigError, match="version"):
        load_train_file(p)


@pytest.mark.parametrize(
    ("written", "mode"),
    [
        ("true", "auto"),
        ("false", "off"),
        ("off", "off"),
        ("auto", "auto"),
        ("bf16", "bf16"),
        ("fp16", "fp16"),
        (None, "auto"),
    ],
)
def test_amp_modes_and_the_old_bool_spelling(tmp_path: Path, written: str | None, mode: str) -> None:
    """``train.amp`` was a bool: ``true`` (bf16 on CUDA) reads as auto, ``false`` as off, in sweep configs,
    training files and stored trial configs alike (YAML reads a bare ``off`` as false: the same mode)."""
    line = f"amp: {written}, " if written is not None else ""
    (tmp_path / "sweep.yaml").write_text(f"train: {{{line}epochs: 2}}\n")
    (tmp_path / "train.yaml").write_text(f"train: {{{line}epochs: 2}}\n")
    assert load_sweep_config(tmp_path / "sweep.yaml").train.amp == mode
    assert load_train_file(tmp_path / "train.yaml").train.amp == mode
    if written in ("true", "false"):
        assert TrainConfig.from_dict({"amp": written == "true"}).amp == mode


def test_a_bad_amp_value_is_one_line_naming_it() -> None:
    from trials.errors import TrainConfigError

    with pytest.raises(TrainConfigError, match=r"^amp: must be one of auto, bf16, fp16, off, got 'fp32'$"):
        TrainConfig.from_dict({"amp": "fp32"})
