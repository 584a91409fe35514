"""The CLI is one tool (issue 20): an option means the same on every command, and every command finds the study
storage by one rule. Checked by introspecting the real click app, by parsing every ``hpo`` command line the README
and the commands' own ``--help`` examples show, and by driving the real CLI (subprocesses) with ``$HPO_STORAGE``.

- ``--json`` is a boolean flag everywhere: JSON on stdout, nothing else there (``hpo verify`` writes a file
  with ``-o``, as ``hpo export`` and ``hpo report`` do).
- A short option names one long option on every command: ``-n`` is ``--n-trials`` and only that (the optuna
  CLI's habit); ``hpo verify``'s seeds are ``--seeds``.
- Storage: ``--storage``, else ``$HPO_STORAGE``, else the config's ``storage:`` (sweep, validate), else
  ``sqlite:///hpo.db``; hpo verify: the export's provenance instead of the default (README, "Commands")."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import typer.main

from hpo import study as studies
from hpo.cli import app
from storage import close_storage
from tests.conftest import REPO, run_cli

ROOT: Any = typer.main.get_command(app)


def _commands() -> dict[str, Any]:
    """Every command by its full name (``storage upgrade`` included)."""
    found: dict[str, Any] = {}
    for name, command in ROOT.commands.items():
        if hasattr(command, "commands"):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def _options() -> Iterator[tuple[str, Any]]:
    for name, command in _commands().items():
        for param in command.params:
            if param.param_type_name == "option":
                yield name, param


# ------------------------------------------------------------------------------------------ the options
def test_every_json_option_is_a_boolean_flag() -> None:
    having = sorted(name for name, p in _options() if "--json" in p.opts)
    assert {"status", "studies", "trials", "best", "verify"} <= set(having)
    for name, p in _options():
        if "--json" in p.opts + p.secondary_opts:
            assert p.is_flag and p.is_bool_flag and p.opts == ["--json"] and not p.secondary_opts, name
            assert p.default is False, name


def test_a_short_option_names_one_long_option_on_every_command() -> None:
    long_of: dict[str, set[str]] = {}
    for _, p in _options():
        longs = [o for o in p.opts if o.startswith("--")]
        for short in (o for o in p.opts if not o.startswith("--")):
            long_of.setdefault(short, set()).update(longs)
    assert long_of["-n"] == {"--n-trials"}  # -n is trials, never seeds
    assert {short: sorted(longs) for short, longs in long_of.items() if len(longs) != 1} == {}
    assert long_of["-o"] == {"--output"} and long_of["-s"] == {"--storage"}
    seeds = next(p for _, p in _options() if "--seeds" in p.opts)
    assert seeds.opts == ["--seeds"] and "-n" not in (seeds.help or "")


def _kind(p: Any) -> str:
    """The Python type an option converts to (None stripped: ``Path | None`` is ``Path``)."""
    annotation = p.type_descriptor.annotation
    return str(getattr(annotation, "__name__", annotation))


def test_one_long_option_is_the_same_kind_of_thing_everywhere() -> None:
    """``--storage`` a URL, ``--output`` a path, ``--study`` a name, on every command that takes them."""
    kinds: dict[str, set[tuple[bool, str]]] = {}
    for _, p in _options():
        for opt in p.opts:
            if opt.startswith("--"):
                kinds.setdefault(opt, set()).add((bool(p.is_flag), _kind(p)))
    assert {opt: k for opt, k in kinds.items() if len(k) != 1} == {}
    assert kinds["--output"] == {(False, "Path")} and kinds["--storage"] == {(False, "str")}
    storage_helps = {name: p.help for name, p in _options() if "--storage" in p.opts}
    for name, text in storage_helps.items():
        assert "$HPO_STORAGE" in text, name
        if name in ("sweep", "validate"):
            assert "the config's storage:, else sqlite:///hpo.db" in text, name
        elif name == "verify":
            assert "provenance" in text, name
        else:
            assert text.endswith("\\[default: $HPO_STORAGE, else sqlite:///hpo.db]."), name


# ------------------------------------------------------------------------------ the command lines shown
_STOP = ("&&", "||", "|", ";")


def _hpo_args(line: str) -> list[str] | None:
    """The arguments of an ``hpo`` command line (``$ hpo ...``, ``.venv/bin/hpo ...``, ``VAR=x hpo ...``,
    ``docker compose run --rm sweep hpo ...``), up to the first ``&&``, pipe or comment; None when the line runs
    no hpo command."""
    if not re.search(r"\bhpo\b", line):
        return None
    try:
        words = shlex.split(line.strip().removeprefix("$ "), comments=True)
    except ValueError:  # not a shell line (an unbalanced quote in YAML or prose)
        return None
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    if words[:1] == ["docker"] and "hpo" in words:
        words = words[words.index("hpo") :]
    if not words or words[0] not in ("hpo", ".venv/bin/hpo"):
        return None
    args = []
    for word in words[1:]:
        if word in _STOP:
            break
        args.append(word)
    return args


def _readme_lines() -> list[str]:
    """Every line of a fenced code block in the README that runs ``hpo``."""
    lines, fenced = [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced and _hpo_args(line) is not None:
            lines.append(line)
    return lines


def _help_examples() -> list[str]:
    found = []
    for command in _commands().values():
        for m in re.finditer(r"\[bold\]Example\[/bold\]: (.+)", command.help or ""):
            found.append(m.group(1).replace("\\[", "["))
    return found


def _parse(args: list[str]) -> Any:
    """Parse ``hpo ARGS`` as click does, without running the command: its context; a usage error raises."""
    ctx = ROOT.make_context("hpo", list(args))
    group, rest = ROOT, [*ctx._protected_args, *ctx.args]
    while True:
        name, command, rest = group.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        if not hasattr(command, "commands"):
            return ctx
        group, rest = command, [*ctx._protected_args, *ctx.args]


def test_the_readme_and_every_help_example_show_command_lines_that_parse() -> None:
    lines = _readme_lines() + _help_examples()
    assert any("hpo verify" in line for line in lines) and len(_help_examples()) >= len(_commands()) - 2
    for line in lines:
        args = _hpo_args(line)
        assert args is not None, line
        ctx = _parse(args)
        assert ctx.args == [], f"{line}: extra arguments {ctx.args}"  # hpo verify takes extras only to refuse them


def test_old_style_lines_do_not_parse_quietly() -> None:
    """What the consistency rules replaced fails: ``-n`` for seeds, and ``--json PATH`` leaves a stray argument
    (hpo verify refuses it in one line: tests/test_verify.py)."""
    with pytest.raises(Exception, match="-n"):
        _parse(["verify", "best.yaml", "-n", "3"])
    assert _parse(["verify", "best.yaml", "--json", "verify.json"]).args == ["verify.json"]
    with pytest.raises(Exception, match="extra argument"):
        _parse(["status", "--study", "s", "--json", "out.json"])


# ------------------------------------------------------------------------------------------ the storage rule
def _study(url: str, name: str) -> None:
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr(studies.ATTR_METRIC, "val_acc")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    study.tell(trial, 0.75)
    close_storage(study._storage)


READS: dict[str, list[str]] = {
    "status": ["status", "--study", "envstudy"],
    "studies": ["studies", "--json"],
    "trials": ["trials", "--study", "envstudy", "--json"],
    "best": ["best", "--study", "envstudy", "--json"],
    "export": ["export", "--study", "envstudy", "-o", "best.yaml"],  # the trial ran no config: says so, naming it
    "report": ["report", "--study", "envstudy", "-o", "report.html"],
    "stop": ["stop", "--study", "envstudy"],
    "delete": ["delete", "--study", "envstudy"],  # without --yes: names the study it found, deletes nothing
    "storage upgrade": ["storage", "upgrade"],
}


@pytest.fixture(scope="module")
def env_storage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder without hpo.db, and a SQLite storage elsewhere holding study ``envstudy``."""
    where = tmp_path_factory.mktemp("elsewhere")
    url = f"sqlite:///{where / 'env.db'}"
    _study(url, "envstudy")
    return tmp_path_factory.mktemp("cwd"), url


@pytest.mark.parametrize("command", list(READS))
def test_every_command_without_a_config_reads_hpo_storage_and_storage_wins(
    command: str, env_storage: tuple[Path, str]
) -> None:
    cwd, url = env_storage
    r = run_cli(*READS[command], cwd=cwd, env={"HPO_STORAGE": url}, timeout=120)
    if command == "delete":
        assert r.returncode == 2 and "would delete study 'envstudy' (1 trials)" in r.stderr, r.stdout + r.stderr
    elif command == "export":
        assert r.returncode == 2 and "trial 0 of study 'envstudy' records no training config" in r.stderr, r.stderr
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        text = (cwd / "report.html").read_text() if command == "report" else r.stdout
        assert ("env.db" if command == "storage upgrade" else "envstudy") in text, r.stdout
    assert not (cwd / "hpo.db").exists()  # the default was not touched
    other = f"sqlite:///{cwd / 'other.db'}"  # --storage wins over $HPO_STORAGE: a file that does not exist
    r = run_cli(*READS[command], "--storage", other, cwd=cwd, env={"HPO_STORAGE": url}, timeout=120)
    assert r.returncode == 2 and "other.db" in r.stderr and "env.db" not in r.stderr, r.stdout + r.stderr
    assert not (cwd / "hpo.db").exists()
    assert not (cwd / "other.db").exists()  # nothing created (storage upgrade included)


def test_the_dashboard_serves_the_hpo_storage(env_storage: tuple[Path, str]) -> None:
    cwd, url = env_storage
    hpo = Path(sys.executable).parent / "hpo"
    env = {**os.environ, "HPO_STORAGE": url, "PYTHONUNBUFFERED": "1"}
    env.pop("HPO_DASHBOARD_TOKEN", None)
    proc = subprocess.Popen([str(hpo), "dashboard", "--port", "0"], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = re.search(r"dashboard on (http://\S+?)/?[;\s]", line)
        assert base, line
        with urllib.request.urlopen(base.group(1) + "/api/studies", timeout=30) as response:
            assert b'"envstudy"' in response.read()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert not (cwd / "hpo.db").exists()


def test_with_a_config_hpo_storage_comes_before_its_storage_and_storage_before_both(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"storage: sqlite:///{tmp_path / 'config.db'}\n"
        "train: {model: resnet18, weights: null, dataset: {type: digits}}\n"
    )

    def storage_line(*args: str, env: dict[str, str]) -> str:
        r = run_cli("validate", str(cfg), "--no-data", *args, cwd=tmp_path, env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return next(line for line in r.stdout.splitlines() if line.startswith("storage: "))

    assert storage_line(env={"HPO_STORAGE": ""}) == f"storage: sqlite:///{tmp_path / 'config.db'}"
    assert storage_line(env={"HPO_STORAGE": "sqlite:///env.db"}) == "storage: sqlite:///env.db"
    assert storage_line("-s", "sqlite:///flag.db", env={"HPO_STORAGE": "sqlite:///env.db"}) == (
        "storage: sqlite:///flag.db"
    )
    cfg.write_text("train: {model: resnet18, weights: null, dataset: {type: digits}}\n")
    assert storage_line(env={"HPO_STORAGE": ""}) == "storage: sqlite:///hpo.db"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]  # validate opens no storage
