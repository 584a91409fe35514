"""The ``hpo`` command: a thin layer over the library. Each command validates, calls one library
function and prints; user mistakes become one line on stderr and exit code 2 (``--debug`` shows the
traceback), a sweep that could not finish exits 1, one that ``study.timeout`` ended short of its target 3,
an interrupted one 130 (Ctrl-C, or ``hpo stop`` from another shell) or 143 (SIGTERM)."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import hpo
from hpo.errors import USER_ERRORS, exit_code_for

app = typer.Typer(
    name="hpo",
    help="Hyperparameter search for fine-tuning image models: Optuna studies (SQLite or PostgreSQL), "
    "trials on Ray, median pruning and early stopping.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        "-s",
        help="Study storage URL \\[default: $HPO_STORAGE, else sqlite:///hpo.db].",
        show_default=False,
    ),
]
ConfigStorageOpt = Annotated[  # hpo sweep and validate: the config's storage: comes before the default
    str | None,
    typer.Option(
        "--storage",
        "-s",
        help="Study storage URL \\[default: $HPO_STORAGE, else the config's storage:, else sqlite:///hpo.db].",
        show_default=False,
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Join this Ray cluster (auto, ray://head:10001, host:6379) \\[default: $RAY_ADDRESS, else a local Ray].",
    ),
]
StudyOpt = Annotated[str, typer.Option("--study", help="Study name.")]
SeedsOpt = Annotated[  # no short name: -n is --n-trials, and only that (tests/test_cli_consistency.py)
    int,
    typer.Option("--seeds", help="Training seeds per arm: train.seed + 0..N-1.", min=1, max=1000),
]

# Typer vendors its own click in recent releases; find the usage-error base class either way.
_ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _storage(flag: str | None) -> str:
    """The storage rule of every command (README, "Commands"): ``--storage``, else ``$HPO_STORAGE``, else
    ``sqlite:///hpo.db``. hpo sweep and validate put the config's ``storage:`` before the default
    (``hpo.config.load_sweep_config``); hpo verify the file's provenance (``_storage_given``)."""
    from hpo.config import DEFAULT_STORAGE

    return _storage_given(flag) or DEFAULT_STORAGE


def _storage_given(flag: str | None) -> str | None:
    """``--storage``, else ``$HPO_STORAGE``, else None: the part of the rule before a command's fallback."""
    from hpo.config import STORAGE_ENV

    return flag or os.environ.get(STORAGE_ENV) or None


def _version(value: bool) -> None:
    if value:
        print(f"hpo {hpo.__version__}")
        raise typer.Exit()


_debug = False  # --debug seen, before or after the command


def _log_levels(debug: bool) -> None:
    """Debug logs (Optuna's too) once ``--debug`` is given before or after the command, warnings otherwise. A
    command's own ``--debug`` is parsed before the root's callback runs: neither turns the other off."""
    global _debug
    _debug = _debug or debug
    level = logging.DEBUG if _debug else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if _debug:
        logging.getLogger().setLevel(level)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.DEBUG if _debug else optuna.logging.WARNING)


_DEBUG_HELP = "Show tracebacks and debug logs."
# Every command takes --debug too (hpo sweep cfg.yaml --debug), not only the root (hpo --debug sweep cfg.yaml).
DebugOpt = Annotated[bool, typer.Option("--debug", help=_DEBUG_HELP, callback=_log_levels, expose_value=False)]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help=_DEBUG_HELP)] = False,
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    _log_levels(debug)


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep config (YAML).", show_default=False)],
    storage: ConfigStorageOpt = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name \\[default: study.name, else the file name].")
    ] = None,
    n_trials: Annotated[
        int | None,
        typer.Option(
            "--n-trials",
            "-n",
            help="Finished trials to reach \\[default: study.n_trials].",
        ),
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option("--parallel", "-p", help="Trials at once \\[default: parallel, else what Ray's resources fit]."),
    ] = None,
    ray_address: RayAddressOpt = None,
    enqueue: Annotated[
        Path | None, typer.Option("--enqueue", help="Warm-start: run this exported config's params first.")
    ] = None,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="Plain log lines instead of the live view.")
    ] = False,
    allow_changes: Annotated[
        bool,
        typer.Option(
            "--allow-changes",
            help="Continue the study although the config changed what makes its trials comparable (data, model, "
            "epochs, search space; hpo refuses by default, naming the fields): the change is recorded on the "
            "study (hpo:changes). Other objectives are refused even so.",
        ),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Run a sweep, or continue one, until the study has n_trials finished trials.

    [bold]Example[/bold]: hpo sweep examples/quickstart.yaml --storage postgresql+psycopg2://hpo@db/hpo --parallel 4

    [bold]Exit codes[/bold]:
    0: the study reached n_trials (or had them already).
    1: the sweep could not go on (failure budget, environment, out of GPU memory, storage or its lease lost).
    2: a usage or config error, or another sweep holds the study.
    3: study.timeout ended the sweep short of n_trials (run it again to continue).
    130: Ctrl-C, or hpo stop from another shell (running trials finished).
    143: SIGTERM (trials still running after drain_timeout are resumed by the next sweep).
    """
    from hpo.config import load_sweep_config
    from hpo.progress import LineObserver

    cfg = load_sweep_config(
        config, storage=storage, **{"study.name": study, "study.n_trials": n_trials, "parallel": parallel}
    )
    from hpo.sweep import run_sweep  # imports Ray: only once the config is known to be good

    observer: Any = LineObserver(metric=cfg.study.metric)
    if not no_progress and sys.stdout.isatty():
        from hpo.live import LiveObserver

        observer = LiveObserver(metric=cfg.study.metric, target=cfg.study.n_trials)
    try:
        result = run_sweep(
            cfg,
            ray_address=ray_address,
            observer=observer,
            enqueue=str(enqueue) if enqueue else None,
            allow_changes=allow_changes,
        )
    finally:
        close = getattr(observer, "close", None)
        if close:
            close()
    raise typer.Exit(result.exit_code)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="Sweep config (YAML).", show_default=False)],
    storage: ConfigStorageOpt = None,
    data: Annotated[
        bool,
        typer.Option(
            "--data/--no-data",
            help="Also check the dataset, model and weights: folders listed, names looked up, and weights not in "
            "the torch hub cache probed for download (seconds; no image decoded).",
        ),
    ] = True,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also decode every image of an image folder (train, val, test) and list the unreadable ones: "
            "exit 2 unless train.dataset.on_bad_image is skip. Reads the whole dataset once; implies --data.",
        ),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Check a sweep config without running it: print the search space and the resolved settings.

    Touches no database and starts no Ray. [bold]Example[/bold]: hpo validate examples/imagefolder.yaml --deep
    """
    from hpo.config import load_sweep_config
    from hpo.progress import format_params
    from storage import mask_url

    cfg = load_sweep_config(config, storage=storage)
    if data or deep:
        from hpo.sweep import preflight

        preflight(cfg)
    if deep:
        from hpo.errors import ConfigError
        from trials.preflight import find_unreadable

        dataset, shown = cfg.base_train.dataset, 20
        bad = find_unreadable(cfg.base_train)
        skip = dataset.on_bad_image == "skip"
        console, prefix = (out, "warning: ") if skip else (err, "")
        for path, reason in bad[:shown]:
            console.print(f"{prefix}unreadable image {path}: {reason}", markup=False)
        if len(bad) > shown:
            console.print(f"{prefix}... and {len(bad) - shown} more", markup=False)
        if bad and not skip:
            raise ConfigError(
                f"train.dataset: {len(bad)} unreadable image(s) under {dataset.path}; "
                "fix or delete them, or set train.dataset.on_bad_image: skip to train on the rest"
            )
        if bad:
            out.print(f"{prefix}train.dataset: {len(bad)} unreadable image(s) will be skipped (on_bad_image: skip)")
        elif dataset.type == "imagefolder":
            out.print(f"images: every image under {dataset.path} decodes", markup=False)
        else:
            out.print(f"images: not scanned (--deep decodes image folders; this dataset is {dataset.type})")
    goals = ", ".join(f"{d} {m}" for m, d in zip(cfg.objectives, cfg.directions, strict=True))
    out.print(
        f"study {cfg.study_name!r}: {goals}, {cfg.study.n_trials} trials, "
        f"sampler {cfg.study.sampler.name}, pruner {cfg.pruner.type}"
    )
    out.print(f"storage: {mask_url(cfg.storage or '')}")
    conditions = cfg.space.conditions
    for name, dist in cfg.space.distributions.items():
        when = conditions.get(name)
        cond = " when " + ", ".join(f"{k} in {list(v)}" for k, v in when.items()) if when else ""
        out.print(f"  search {name}: {dist}{cond}")
    if cfg.space.fixed:
        out.print(f"  fixed: {format_params(cfg.space.fixed)}")
    out.print("ok")


@app.command()
def status(
    study: StudyOpt,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", help="Show at most this many trials (best first; --json too); 0 = all.")
    ] = 50,
    debug: DebugOpt = False,
) -> None:
    """Trials by state, the best trial, and the compute pruning and early stopping saved.

    [bold]Example[/bold]: hpo status --study quickstart --storage sqlite:///hpo.db
    """
    from hpo.views.studies import study_status

    st = study_status(_storage(storage), study, limit=limit if limit > 0 else None)
    if as_json:
        print(json.dumps(st.to_dict(), indent=2, default=str))
        return
    _print_status(st, limit)


def _print_status(st: Any, limit: int) -> None:
    from hpo.progress import format_duration, format_params
    from hpo.views.status import status_order

    counts = st.counts
    rows = status_order(st.rows, st.direction)  # the failed first, with their reasons; then the best
    shown = rows if limit <= 0 else rows[:limit]
    which = "the failed, then the best" if any(r.state == "FAIL" for r in shown) else "the best"
    more = f", {which}: {len(shown)} shown" if len(shown) < st.n_trials else ""
    table = Table(title=f"study {st.study}: {st.n_trials} trials{more}", title_justify="left")
    for col in ("#", "state", st.metric, "epochs", "duration", "params"):
        table.add_column(col, justify="right" if col in ("#", st.metric, "epochs", "duration") else "left")
    for r in shown:
        epochs = f"{r.epochs_run}/{r.max_epochs}" if r.max_epochs else str(r.epochs_run)
        table.add_row(
            str(r.number),
            r.state,
            "" if r.value is None else f"{r.value:.4f}",
            epochs,
            "" if r.duration_s is None else format_duration(r.duration_s),
            format_params(r.params) + (f"  [dim]{r.reason}[/dim]" if r.reason else ""),
        )
    out.print(table)
    out.print("by state: " + ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if v))
    if st.paused:
        out.print(f"paused: {st.paused} of the waiting trials (asha: they resume when promoted)")
    if st.best:
        out.print(
            f"best: trial {st.best['number']} {st.metric}={st.best['value']:.4f}  {format_params(st.best['params'])}"
        )
    else:
        out.print("best: none yet (no COMPLETE trial)")
    if st.pareto:
        front = Table(
            title=f"Pareto front ({' vs '.join(st.objectives)}): {len(st.pareto)} trials", title_justify="left"
        )
        for col in ("#", *st.objectives, "params"):
            front.add_column(col, justify="left" if col == "params" else "right")
        for p in st.pareto:
            front.add_row(
                str(p["number"]), *(f"{p['values'][m]:.4g}" for m in st.objectives), format_params(p["params"])
            )
        out.print(front)
    out.print(
        f"compute: {st.epochs_run} epochs, {format_duration(st.trial_seconds)} of trial time; "
        f"saved by pruning and early stopping: {st.epochs_saved} of {st.epochs_budget} epochs ({st.saved_fraction:.0%})"
    )


@app.command()
def studies(
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    debug: DebugOpt = False,
) -> None:
    """List the studies in a storage with their trial counts and best values.

    [bold]Example[/bold]: hpo studies --storage postgresql+psycopg2://hpo@db/hpo
    """
    from hpo.views.studies import list_studies

    rows = list_studies(_storage(storage))
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"{len(rows)} studies", title_justify="left")
    for col in ("study", "direction", "trials", "complete", "pruned", "failed", "running", "best"):
        table.add_column(col)
    for r in rows:
        c = r["counts"]
        table.add_row(
            r["study"],
            r["direction"],
            str(r["n_trials"]),
            str(c["COMPLETE"]),
            str(c["PRUNED"]),
            str(c["FAIL"]),
            str(c["RUNNING"]),
            "" if r["best_value"] is None else f"{r['best_value']:.4f}",
        )
    out.print(table)


@app.command()
def export(
    study: StudyOpt,
    storage: StorageOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the config.")] = Path("best.yaml"),
    show: Annotated[bool, typer.Option("--print/--no-print", help="Also print the exported YAML.")] = False,
    pick: Annotated[
        str | None,
        typer.Option(
            "--pick",
            help="Multi-objective studies: constraints on the other objectives, e.g. 'latency_ms<=5, params_m<12'; "
            "then the best primary objective among the Pareto-optimal trials that meet them.",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Export the best trial's full training config for production training (hpo train). A multi-objective
    study exports the Pareto-optimal trial with the best primary objective (see --pick).

    [bold]Example[/bold]: hpo export --study quickstart -o best.yaml && hpo train best.yaml --output runs/prod
    """
    from hpo.views.export import export_best

    result = export_best(_storage(storage), study, output, pick=pick)
    if show:
        print(result.text, end="")
    out.print(f"exported trial {result.trial} ({result.metric}={result.value:.4f}) to {result.path}")


@app.command()
def train(
    config: Annotated[
        Path, typer.Argument(help="A file from hpo export, or any YAML with a train: section.", show_default=False)
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for model.pt, metrics.json, config.yaml.")
    ] = Path("runs/prod"),
    debug: DebugOpt = False,
) -> None:
    """Production training: the same fit a sweep trial runs, without pruning; then one evaluation on the
    held-out test split, recorded in metrics.json (test_metrics).

    [bold]Example[/bold]: hpo train best.yaml --output runs/prod
    """
    from hpo.train import train_from_file

    run = train_from_file(config, output, log=lambda s: out.print(s))
    tuned = f" (tuned trial: {run.tuned_value:.4f})" if run.tuned_value is not None else ""
    out.print(
        f"{run.metric}={run.value:.4f}{tuned}; {run.status} after {run.epochs_run} epochs, best epoch {run.best_epoch}"
    )
    if run.test_metrics is not None:
        shown = " ".join(f"{k}={v:.4f}" for k, v in run.test_metrics.items())
        out.print(f"test: {shown} (the held-out test split; the sweep never saw it)")
    else:
        out.print("test: none (train.dataset.test_split is 0: nothing held out)")
    out.print(f"wrote {run.output / 'model.pt'}, {run.output / 'metrics.json'}")


@app.command(context_settings={"allow_extra_args": True})  # extra arguments: see _refuse_extra
def verify(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="A file from hpo export (with provenance).", show_default=False)],
    seeds: SeedsOpt = 3,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Compare with this training file \\[default: CONFIG with lr, batch_size, dropout, weight_decay "
            "and aug_strength at the training config's defaults].",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict as JSON on stdout (the table and progress: stderr).")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also write the verdict as JSON to this file.", show_default=False),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            help="The least tolerance: reproduced when the mean retrained val metric is no worse than the trial's "
            "value by more than the winner's curse plus a tolerance from the val set's size and the seeds' spread, "
            "never below this.",
        ),
    ] = 0.01,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            "-s",
            help="Storage of the study, to record the verdict in "
            "\\[default: $HPO_STORAGE, else the storage in the file's provenance (it has no password)].",
            show_default=False,
        ),
    ] = None,
    ray_address: RayAddressOpt = None,
    cpus_per_run: Annotated[float, typer.Option("--cpus-per-run", help="CPUs (and torch threads) per run.")] = 1.0,
    gpus_per_run: Annotated[
        float | None,
        typer.Option(
            "--gpus-per-run",
            help="GPUs per run (0.5: two runs per GPU) "
            "\\[default: what the sweep's trial had (the file's provenance; 1 if it does not say), 0 on a cluster "
            "without GPUs].",
            show_default=False,
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Check an exported config on data the sweep never saw: does it reproduce, and did tuning pay?

    Retrains CONFIG with N training seeds, and a baseline with the same seeds, each with the same fit as
    hpo train, as Ray tasks in parallel; evaluates every run on the held-out test split. Prints one row per
    seed, then: [bold]reproduced[/bold] (the mean retrained val metric no worse than the value the trial
    recorded by more than the winner's curse plus a tolerance from the val set's size and the seeds' spread,
    at least --tolerance; exit 1 if not) and the [bold]gain[/bold] (tuned minus baseline test metric, paired by
    seed: mean and 95% CI). Records the verdict on the study (hpo report shows it) when its storage opens.

    [bold]Example[/bold]: hpo verify best.yaml --seeds 3 -o verify.json
    """
    from hpo.verify import VerifySettings, verify_file

    _refuse_extra(ctx, config, as_json)
    settings = VerifySettings(
        seeds=seeds,
        tolerance=tolerance,
        baseline=baseline,
        ray_address=ray_address,
        storage=_storage_given(storage),  # else the file's provenance
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
    )
    console = err if as_json else out  # --json: stdout holds the JSON document alone
    result = verify_file(config, settings, log=lambda s: console.print(s, markup=False))
    _finish_verify(result, as_json, output)


def _refuse_extra(ctx: typer.Context, config: Path, as_json: bool) -> None:
    """``hpo verify`` takes one file. ``--json`` was an option taking a path (``--json out.json``) before it
    became a flag as on every other command: such a command line is refused in one line naming ``-o``."""
    if not ctx.args:
        return
    if as_json:
        from hpo.errors import ConfigError

        path = next((a for a in (*ctx.args, str(config)) if a.endswith(".json")), ctx.args[-1])
        raise ConfigError(
            f"--json is a flag now (the verdict as JSON on stdout); write the file with -o {path}, "
            f"got an extra argument {ctx.args[0]!r}"
        )
    ctx.fail(f"Got unexpected extra argument{'s' if len(ctx.args) > 1 else ''} ({' '.join(ctx.args)})")


def _finish_verify(result: Any, as_json: bool, output: Path | None) -> None:
    """Print ``hpo verify``'s verdict and where it was recorded (with ``as_json``: on stderr, and the JSON
    document on stdout), write it to ``output``; exit 1 when it did not reproduce."""
    from hpo import files

    console = err if as_json else out
    _print_verdict(result.verdict, console)
    if result.stored_in is not None:
        console.print(
            f"verdict stored on study {result.verdict.study!r} in {result.stored_in} (user attr hpo:verify)",
            markup=False,
        )
    else:
        console.print(f"note: {result.note}", markup=False)
    document = json.dumps(result.verdict.to_dict(), indent=2) + "\n"
    if output is not None:
        files.write_atomic(output, document)
        console.print(f"wrote {output}", markup=False)
    if as_json:
        sys.stdout.write(document)
        sys.stdout.flush()
    if not result.verdict.reproduced:
        raise typer.Exit(1)


def _print_verdict(v: Any, console: Console) -> None:
    def f(x: float, sign: bool = False) -> str:
        return "n/a" if x != x else (f"{x:+.4f}" if sign else f"{x:.4f}")  # x != x: NaN

    baseline = {r.seed: r for r in v.baseline}
    table = Table(title=f"trial {v.trial} of study {v.study}: tuned vs baseline", title_justify="left")
    for col in (
        "seed",
        f"tuned {v.metric}",
        f"tuned {v.test_metric}",
        f"baseline {v.metric}",
        f"baseline {v.test_metric}",
        f"gain ({v.test_metric})",
    ):
        table.add_column(col, justify="right")
    for r in v.tuned:
        b = baseline[r.seed]
        table.add_row(str(r.seed), f(r.val), f(r.test), f(b.val), f(b.test), f(r.test - b.test, sign=True))
    mean, ci = v.gain
    table.add_row(
        "mean",
        f(v.val_mean),
        f(_fmean([r.test for r in v.tuned])),
        f(_fmean([r.val for r in v.baseline])),
        f(_fmean([r.test for r in v.baseline])),
        f(mean, sign=True),
        style="bold",
    )
    console.print(table)
    from hpo.verify import reproduction_lines

    for line in reproduction_lines(v):
        console.print(line, markup=False)
    interval = f"95% CI [{f(ci[0], sign=True)}, {f(ci[1], sign=True)}]" if ci else "no CI with one seed"
    better = "higher" if v.direction == "maximize" else "lower"
    source = "default hyperparameters" if v.baseline_source == "defaults" else v.baseline_source
    console.print(
        f"gain on the test split: {v.test_metric} tuned - baseline ({source}) = {f(mean, sign=True)}, {interval}, "
        f"{len(v.seeds)} seed(s) ({better} {v.test_metric} is better)",
        markup=False,
    )


def _fmean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@app.command()
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="HPO_DASHBOARD_TOKEN",
            show_envvar=False,
            show_default=False,
            help="Require this token (open the dashboard once as /?token=..., or send 'Authorization: Bearer ...') "
            "\\[default: $HPO_DASHBOARD_TOKEN, else none: loopback only].",
        ),
    ] = None,
    threads: Annotated[int, typer.Option("--threads", help="Request threads.")] = 8,
    debug: DebugOpt = False,
) -> None:
    """optuna-dashboard on a study storage, served by a threaded WSGI server (waitress); Ctrl-C stops it.

    Pass a storage password through $HPO_STORAGE rather than --storage, so it stays out of the process list.
    [bold]Example[/bold]: HPO_STORAGE=postgresql+psycopg2://hpo:...@db/hpo hpo dashboard --port 8080
    """
    from hpo.views.dashboard import check_bind, serve

    check_bind(host, token)

    def ready(url: str) -> None:
        hint = " (open it once with ?token=<your token>)" if token else ""
        out.print(f"dashboard on {url}{hint}; Ctrl-C stops it")

    serve(_storage(storage), host=host, port=port, token=token, threads=threads, ready=ready)


@app.command()
def report(
    study: StudyOpt,
    storage: StorageOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the HTML file.")] = Path("report.html"),
    debug: DebugOpt = False,
) -> None:
    """One self-contained HTML file about a study (summary, best config, Optuna's plots) that works offline.

    [bold]Example[/bold]: hpo report --study quickstart -o report.html
    """
    from hpo.views.report import write_report

    out.print(f"wrote {write_report(_storage(storage), study, output)}")


@app.command()
def trials(
    study: StudyOpt,
    storage: StorageOpt = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            help="Only trials in this state: complete, pruned, fail, running, waiting or paused (repeat it, or "
            "separate by commas). Paused: waiting trials asha paused; waiting: the others (enqueued).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", help="Show only the last (newest) this many of them; 0 = all.", min=0)
    ] = 0,
    debug: DebugOpt = False,
) -> None:
    """List a study's trials by number: state, value, duration, params (and why a failed trial failed).

    [bold]Example[/bold]: hpo trials --study quickstart --state complete --state pruned --limit 20
    """
    from hpo.views.trials import list_trials, parse_states

    found = list_trials(_storage(storage), study, states=parse_states(state or []), limit=limit or None)
    if as_json:
        print(json.dumps(found.to_dict(), indent=2, default=str))
        return
    _print_trials(found)


def _print_trials(found: Any) -> None:
    from hpo.progress import format_duration, format_params

    which = "" if found.matched == found.total else f", {found.matched} in the states asked for"
    cut = f", the last {len(found.trials)} shown" if len(found.trials) < found.matched else ""
    table = Table(title=f"study {found.study}: {found.total} trials{which}{cut}", title_justify="left")
    for col in ("#", "state", found.metric, "epochs", "duration", "params"):
        table.add_column(col, justify="left" if col in ("state", "params") else "right")
    for t in found.trials:
        table.add_row(
            str(t.number),
            t.state,
            "" if t.value is None else f"{t.value:.4f}",
            str(t.epochs_run),
            "" if t.duration_s is None else format_duration(t.duration_s),
            format_params(t.params) + (f"  [dim]{escape(t.reason)}[/dim]" if t.reason else ""),
        )
    out.print(table)


@app.command()
def best(
    study: StudyOpt,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")] = False,
    debug: DebugOpt = False,
) -> None:
    """The best trial (the one hpo export exports): number, value, params and the training config it ran.

    Exit 2 with one line when no trial has finished with a value yet.
    [bold]Example[/bold]: hpo best --study quickstart --json | jq .params
    """
    from hpo.progress import format_params
    from hpo.views.trials import best_trial

    b = best_trial(_storage(storage), study)
    if as_json:
        print(json.dumps(b.to_dict(), default=str))
        return
    shown = ", ".join(f"{m}={v:.6g}" for m, v in b.values.items())
    out.print(f"best trial of study {b.study}: {b.number} ({shown})", markup=False)
    out.print(f"params: {format_params(b.params)}", markup=False)
    if b.train_config is not None:
        out.print(f"train config: {json.dumps(b.train_config, sort_keys=True)}", markup=False)


@app.command()
def stop(study: StudyOpt, storage: StorageOpt = None, debug: DebugOpt = False) -> None:
    """Ask the sweep running a study to stop, from another shell or machine: it starts no new trials, lets the
    running ones finish (as a first Ctrl-C does) and exits with code 130. Returns at once.

    The request is written into the study; the sweep reads it within a few seconds. Exit 0 also when no sweep
    runs the study (it says so, and writes nothing).
    [bold]Example[/bold]: hpo stop --study quickstart --storage postgresql+psycopg2://hpo@db/hpo
    """
    from hpo.sweep.stop import request_stop

    out.print(request_stop(_storage(storage), study).describe(), markup=False)


@app.command()
def delete(
    study: StudyOpt,
    storage: StorageOpt = None,
    checkpoints: Annotated[
        bool,
        typer.Option(
            "--checkpoints",
            help="Also remove the checkpoint folders its trials recorded: the sweep's <output_dir>/<study> on this "
            "machine (TensorBoard runs included), or each trial's folder under a URL output_dir (fsspec).",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Really delete: required (nothing can undo it).")] = False,
    debug: DebugOpt = False,
) -> None:
    """Delete a study (its trials, params, values and attrs) from the storage; with --checkpoints, its trials'
    checkpoint folders too. Refused without --yes, and while a sweep runs the study (hpo stop it first).

    [bold]Example[/bold]: hpo delete --study quickstart --checkpoints --yes
    """
    from hpo.errors import HpoError
    from hpo.views.delete import delete_study, describe, summary

    url = _storage(storage)
    if not yes:
        s = summary(url, study)  # the study must exist: an unknown name is the error to show
        also = " and its checkpoint folders" if checkpoints else ""
        raise HpoError(f"would delete study {s['study']!r} ({s['trials']} trials){also}; pass --yes to delete it")
    for line in describe(delete_study(url, study, checkpoints=checkpoints)):
        out.print(line, markup=False)


storage_app = typer.Typer(help="Storage maintenance.", no_args_is_help=True)
app.add_typer(storage_app, name="storage")


@storage_app.command("upgrade")
def storage_upgrade(storage: StorageOpt = None, debug: DebugOpt = False) -> None:
    """Migrate a storage made by an older Optuna to this Optuna's schema (wraps Optuna's storage upgrade).

    Back the database up first. [bold]Example[/bold]: HPO_STORAGE=postgresql+psycopg2://... hpo storage upgrade
    """
    from storage import mask_url
    from storage.maintenance import upgrade

    url = _storage(storage)
    result = upgrade(url)
    if result.changed:
        out.print(f"upgraded {mask_url(url)} from schema {result.before} to {result.after}")
    else:
        out.print(f"{mask_url(url)} is already at the newest schema ({result.head})")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run ``hpo`` and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="hpo", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except typer.Exit as e:
        return int(e.exit_code)
    except _ClickException as e:  # usage errors: click's own message, exit 2
        e.show()  # type: ignore[attr-defined]
        return int(e.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except USER_ERRORS as e:
        if debug:
            traceback.print_exc()
        message = " ".join(str(e).split()) or type(e).__name__
        err.print(f"error: {message}", markup=False)
        return exit_code_for(e)
    except Exception as e:  # a bug in hpo: say so in one line, with the traceback under --debug
        if debug:
            traceback.print_exc()
        from storage import redact

        err.print(
            f"internal error: {type(e).__name__}: {redact(str(e).splitlines()[0] if str(e) else '')} "
            "(run with --debug for the traceback)",
            markup=False,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
