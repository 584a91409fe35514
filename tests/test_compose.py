"""docker-compose.yml, the Dockerfile, .dockerignore and .env.example, checked without a Docker engine.

The compose file is interpolated with .env.example's values the way ``docker compose`` does it, then
validated against the Compose Specification's own JSON schema (tests/data/compose-spec.json; its source
and license are in tests/data/README.md). Then this project's rules: health checks where others wait
on them, no committed secrets, admin ports on loopback only, a worker that scales, the storage URL in
the environment only, one image built from the Dockerfile, and commands the real ``hpo`` and ``ray``
CLIs accept. Each rule is a pure function returning its problems, and a table of mutated files shows
every rule catching what it is there to catch. The helper scripts in docker/ are run for real.

None of this starts a container: `make compose-test` (docker/compose_test.sh) does, with a Docker engine.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import hashlib
import json
import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO
from tests.fixtures_files import http_server

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA_FILE = REPO / "tests" / "data" / "compose-spec.json"

POSTGRES = "postgres"
WORKER = "ray-worker"
SWEEP = "sweep"
DASHBOARD = "dashboard"
#: Others wait on these being healthy, so each needs a real health check.
NEEDS_HEALTHCHECK = (POSTGRES, "ray-head", DASHBOARD, WORKER)
#: These open the study storage, so they get $HPO_STORAGE; no other service may.
STORAGE_CLIENTS = ("storage-init", DASHBOARD, SWEEP)
#: Programs of the hpo image (a service whose command starts with one of them must run that image).
HPO_PROGRAMS = ("hpo", "ray", "python")
#: Where trials write checkpoints: the image's WORKDIR plus the default output_dir "runs".
RUNS_TARGET = "/work/runs"
#: Where the sweep service's commands write files that must outlive a `run --rm` container (hpo export -o).
OUT_TARGET = "/work/out"
#: The Ray Client address of the cluster's head, which every hpo command in the sweep service must use.
HEAD_CLIENT = "ray://ray-head:10001"
#: Where the compose file finds the helper scripts the Dockerfile copies from docker/.
HELPERS_IN_IMAGE = "/opt/hpo/docker/"
LOOPBACK = ("127.0.0.1", "::1")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|(^|_)KEY$", re.IGNORECASE)
CLI_ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
BIN = Path(sys.executable).parent

Compose = dict[str, Any]
Problems = list[str]


# --------------------------------------------------------------------------------------------------
# Reading the files


def load_compose(text: str | None = None) -> Compose:
    data = yaml.safe_load(COMPOSE_FILE.read_text() if text is None else text)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def parse_env_file(text: str) -> tuple[dict[str, str], set[str]]:
    """``KEY=VALUE`` lines, and the keys with a comment line right above them."""
    values: dict[str, str] = {}
    documented: set[str] = set()
    previous = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f".env line without '=': {raw!r}")
            values[key.strip()] = value.strip().strip("'\"")
            if previous.startswith("#"):
                documented.add(key.strip())
        previous = line
    return values, documented


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


# --------------------------------------------------------------------------------------------------
# Interpolation, as docker compose does it (${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
# ${VAR?error}, ${VAR:+alt}, $VAR, and $$ for a literal $)

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg, current = m["op"], m["arg"] or "", env.get(name)
        if op is None:
            return current or ""
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return "" if current is None else arg
        return current or ""

    return _VAR.sub(substitute, value)


def referenced_vars(value: Any) -> set[str]:
    """Every variable a compose value interpolates."""
    if isinstance(value, dict):
        return set().union(*(referenced_vars(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced_vars(v) for v in value)) if value else set()
    if not isinstance(value, str):
        return set()
    return {m["braced"] or m["named"] for m in _VAR.finditer(value) if not m["escaped"]}


def default_of(value: str) -> str:
    """``default`` when ``value`` is exactly ``${VAR:-default}`` (what a fresh machine gets), else ``value``."""
    m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-(?P<default>[^}]*)\}", value)
    return m["default"] if m else value


def required_ref(value: str) -> str | None:
    """The variable when ``value`` is exactly ``${VAR:?message}`` (or ``${VAR?message}``), else None."""
    m = re.fullmatch(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}", value)
    return m["name"] if m else None


# --------------------------------------------------------------------------------------------------
# Small accessors


def services(c: Compose) -> dict[str, dict[str, Any]]:
    return c.get("services") or {}


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv(command: Any) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def health_commands(svc: dict[str, Any]) -> list[list[str]]:
    """The commands a health check runs (CMD-SHELL split at && and ;, redirections dropped)."""
    test = (svc.get("healthcheck") or {}).get("test")
    if not test:
        return []
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if test[0] == "CMD":
        return [list(test[1:])]
    if test[0] != "CMD-SHELL":
        return []
    commands = []
    for part in re.split(r"&&|\|\||;", " ".join(test[1:])):
        words = [w for w in shlex.split(part) if not re.match(r"^\d?>", w)]
        if words:
            commands.append(words)
    return commands


def all_commands(svc: dict[str, Any]) -> list[list[str]]:
    """The service's main command (entrypoint + command), then its health check's."""
    main = argv(svc.get("entrypoint")) + argv(svc.get("command"))
    return ([main] if main else []) + health_commands(svc)


def volume_mounts(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes in long form: type, source, target, read_only."""
    mounts = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            mounts.append({"read_only": False, **v})
            continue
        parts = re.split(r":(?![^{]*\})", v)  # not at the ':' of a ${VAR:-default}
        source, target, mode = [*parts, "", ""][:3] if len(parts) > 1 else ("", v, "")
        kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
        mounts.append({"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")})
    return mounts


def option(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


# --------------------------------------------------------------------------------------------------
# The rules: each returns a list of problems, empty when the files keep it


def healthcheck_problems(c: Compose) -> Problems:
    problems = []
    for name in NEEDS_HEALTHCHECK:
        hc = services(c).get(name, {}).get("healthcheck")
        if not hc or hc.get("disable") in (True, "true") or not hc.get("test") or hc["test"][0] == "NONE":
            problems.append(f"{name}: no health check")
    return problems


def depends_on_problems(c: Compose) -> Problems:
    problems = []
    svcs = services(c)
    for name, svc in svcs.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on is a list, which waits only for the start, not for health")
            continue
        for target, spec in deps.items():
            condition = (spec or {}).get("condition", "service_started")
            if target not in svcs:
                problems.append(f"{name}: depends on unknown service {target}")
            elif condition == "service_healthy":
                if not svcs[target].get("healthcheck"):
                    problems.append(f"{name}: waits for {target} to be healthy, but {target} has no health check")
            elif condition == "service_completed_successfully":
                if svcs[target].get("restart", "no") != "no":
                    problems.append(f"{name}: waits for {target} to finish, but {target} restarts")
            else:
                problems.append(f"{name}: depends on {target} with condition {condition!r}, not service_healthy")
    return problems


def secret_problems(c: Compose) -> Problems:
    """Secrets only as required ``${VAR:?...}`` references: no literal, no default, in no value."""
    problems = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if SECRET_NAME.search(str(k)) and isinstance(v, str | int | float) and not required_ref(str(v)):
                    problems.append(f"{where}.{k}: a secret must be a required ${{VAR:?...}} reference, got {v!r}")
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, str) and "=" in v and SECRET_NAME.search(v.partition("=")[0]):
                    key, _, v2 = v.partition("=")
                    if not required_ref(v2):
                        problems.append(f"{where}[{i}]: {key} must be a required ${{VAR:?...}} reference")
                walk(v, f"{where}[{i}]")
        elif isinstance(value, str):
            for m in _VAR.finditer(value):
                name = m["braced"]
                if name and SECRET_NAME.search(name) and m["op"] not in (":?", "?"):
                    problems.append(f"{where}: ${{{name}}} must be required (${{{name}:?...}}), not optional")
            for m in re.finditer(r"://[^/\s:@]*:(?P<password>[^@\s]*)@", value):
                if not required_ref(m["password"]):
                    problems.append(f"{where}: a URL with a literal password ({m['password']!r})")

    walk(c, "compose")
    return problems


def env_example_problems(c: Compose, env_text: str) -> Problems:
    problems = []
    values, documented = parse_env_file(env_text)
    used = referenced_vars(c)
    for name in sorted(used - set(values)):
        problems.append(f".env.example: {name} is used by docker-compose.yml but not listed")
    for name in sorted(set(values) - used):
        problems.append(f".env.example: {name} is listed but docker-compose.yml does not use it")
    for name in sorted(set(values) - documented):
        problems.append(f".env.example: {name} has no comment line above it")
    for name, value in values.items():
        if SECRET_NAME.search(name) and value:
            problems.append(f".env.example: {name} must be empty (compose then refuses to start), not {value!r}")
    return problems


def port_problems(c: Compose) -> Problems:
    """Every published port is bound to loopback, literally (not through a variable)."""
    problems = []
    for name, svc in services(c).items():
        if svc.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host publishes every port it listens on")
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                if port.get("published") is not None and port.get("host_ip") not in LOOPBACK:
                    problems.append(f"{name}: port {port} is not bound to 127.0.0.1")
                continue
            text = str(port)
            if not any(text.startswith(f"{ip}:") or text.startswith(f"[{ip}]:") for ip in LOOPBACK):
                problems.append(f"{name}: port {text!r} is not bound to 127.0.0.1")
    return problems


def worker_problems(c: Compose) -> Problems:
    problems = []
    worker = services(c).get(WORKER)
    if worker is None:
        return [f"no {WORKER} service"]
    devices = (((worker.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    if not any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices):
        problems.append(f"{WORKER}: no NVIDIA GPU device reservation")
    for key in ("container_name", "hostname", "ports"):
        if worker.get(key):
            problems.append(f"{WORKER}: {key} is set, so `--scale {WORKER}=N` cannot start N of them")
    if any(option(a, "--address") is None for a in all_commands(worker)[:1]):
        problems.append(f"{WORKER}: `ray start` without --address does not join the head")
    return problems


def storage_url_problems(c: Compose) -> Problems:
    """The storage URL (with its password) only in the environment of the services that need it."""
    problems = []
    for name, svc in services(c).items():
        for args in all_commands(svc):
            joined = " ".join(args)
            if re.search(r"postgres(ql)?(\+\w+)?://|sqlite:|HPO_STORAGE|POSTGRES_PASSWORD", joined) or (
                "--storage" in args or "-s" in args
            ):
                problems.append(f"{name}: the storage URL is on a command line ({joined!r})")
        has_url = "HPO_STORAGE" in environment(svc)
        if name in STORAGE_CLIENTS and not has_url:
            problems.append(f"{name}: opens the storage but HPO_STORAGE is not in its environment")
        if name not in STORAGE_CLIENTS and name != POSTGRES and has_url:
            problems.append(f"{name}: gets database credentials it does not need")
    return problems


def dashboard_problems(c: Compose) -> Problems:
    svc = services(c).get(DASHBOARD)
    if svc is None:
        return [f"no {DASHBOARD} service"]
    args = argv(svc.get("command"))
    problems = []
    if args[:2] != ["hpo", "dashboard"]:
        problems.append(f"{DASHBOARD}: does not run `hpo dashboard`: {args}")
    if "--token" in args:
        problems.append(f"{DASHBOARD}: --token on the command line shows the token in the process list")
    health = health_commands(svc)
    if not health or option(health[0], "--bearer-env") != "HPO_DASHBOARD_TOKEN" or "/api/" not in " ".join(health[0]):
        problems.append(f"{DASHBOARD}: the health check does not ask the API with the token: a 401 or 500 would pass")
    host = option(args, "--host") or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        token = environment(svc).get("HPO_DASHBOARD_TOKEN")
        if token is None or not required_ref(token):
            problems.append(f"{DASHBOARD}: listens on {host} without a required HPO_DASHBOARD_TOKEN from .env")
    return problems


def image_problems(c: Compose) -> Problems:
    """Every service that runs hpo, Ray or our scripts uses the one image built from the Dockerfile."""
    problems = []
    images = set()
    for name, svc in services(c).items():
        commands = all_commands(svc)
        program = commands[0][0] if commands else None
        if name == POSTGRES:
            image = default_of(str(svc.get("image")))
            if not re.fullmatch(r"postgres:\d+(\.\d+)?(-[a-z0-9]+)?", image):
                problems.append(f"{POSTGRES}: image {svc.get('image')!r} does not pin a PostgreSQL major version")
            continue
        if program not in HPO_PROGRAMS:
            problems.append(f"{name}: runs {program!r}, not hpo, ray or python from the hpo image")
        build = svc.get("build")
        build = {"context": build} if isinstance(build, str) else build or {}
        context, dockerfile = build.get("context"), build.get("dockerfile", "Dockerfile")
        if context != "." or dockerfile != "Dockerfile":
            problems.append(f"{name}: not built from ./Dockerfile (build: {build!r})")
        images.add(svc.get("image"))
    if len(images) != 1 or None in images:
        problems.append(f"the hpo services use images {sorted(map(str, images))}, not one shared image name")
    return problems


def sweep_problems(c: Compose) -> Problems:
    problems = []
    svcs = services(c)
    sweep, worker = svcs.get(SWEEP), svcs.get(WORKER)
    if sweep is None or worker is None:
        return [f"no {SWEEP} or {WORKER} service"]
    if SWEEP not in (sweep.get("profiles") or []):
        problems.append(f"{SWEEP}: not in a 'sweep' profile, so `docker compose up` would start a sweep")
    args = argv(sweep.get("command"))
    if args[:2] != ["hpo", "sweep"] or len(args) < 3:
        return [*problems, f"{SWEEP}: does not run `hpo sweep CONFIG`: {args}"]
    address = environment(sweep).get("RAY_ADDRESS")
    if address != HEAD_CLIENT:
        problems.append(f"{SWEEP}: RAY_ADDRESS is {address!r}, not {HEAD_CLIENT}: hpo there would start its own Ray")
    if option(args, "--ray-address") not in (None, HEAD_CLIENT):
        problems.append(f"{SWEEP}: --ray-address {option(args, '--ray-address')} is not the head, {HEAD_CLIENT}")
    mounts = {m["target"]: m for m in volume_mounts(sweep)}
    config = mounts.get(args[2])
    if config is None or not config.get("read_only"):
        problems.append(f"{SWEEP}: the config {args[2]} is not mounted read-only")
    out = mounts.get(OUT_TARGET)
    if out is None or out.get("read_only"):
        problems.append(f"{SWEEP}: no writable mount at {OUT_TARGET}: what hpo export writes dies with the container")
    runs = mounts.get(RUNS_TARGET)
    worker_runs = {m["target"]: m for m in volume_mounts(worker)}.get(RUNS_TARGET)
    if not runs or not worker_runs or runs["type"] != "volume" or runs.get("source") != worker_runs.get("source"):
        problems.append(f"{SWEEP} and {WORKER}: no shared named volume at {RUNS_TARGET} for the checkpoints")
    waits = sweep.get("depends_on") or {}
    for needed in (POSTGRES, "ray-head", WORKER):  # without a worker, a sweep finds no CPUs to place trials on
        if (waits.get(needed) or {}).get("condition") != "service_healthy":
            problems.append(f"{SWEEP}: does not wait for {needed} to be healthy")
    return problems


def volume_problems(c: Compose) -> Problems:
    declared = set((c.get("volumes") or {}).keys())
    problems = []
    for name, svc in services(c).items():
        for m in volume_mounts(svc):
            if m.get("type") == "volume" and m.get("source") and m["source"] not in declared:
                problems.append(f"{name}: named volume {m['source']!r} is not declared under volumes:")
    return problems


def helper_problems(c: Compose, dockerfile_text: str) -> Problems:
    """Scripts the compose file runs from the image exist in docker/, and the Dockerfile copies them there."""
    problems = []
    for name, svc in services(c).items():
        for args in all_commands(svc):
            for a in args:
                if a.startswith(HELPERS_IN_IMAGE):
                    script = REPO / "docker" / a[len(HELPERS_IN_IMAGE) :]
                    if not script.is_file():
                        problems.append(f"{name}: runs {a}, but {script.relative_to(REPO)} does not exist")
                    if HELPERS_IN_IMAGE.rstrip("/") not in dockerfile_text:
                        problems.append(f"{name}: runs {a}, but the Dockerfile puts nothing in {HELPERS_IN_IMAGE}")
    return problems


HelpFor = Callable[[tuple[str, ...]], str | None]


def cli_problems(c: Compose, help_for: HelpFor) -> Problems:
    """Each hpo / ray command names a real subcommand, and every --flag it uses is in that subcommand's help."""
    problems = []
    for name, svc in services(c).items():
        for args in all_commands(svc):
            if not args or args[0] not in ("hpo", "ray") or len(args) < 2:
                continue
            text = help_for((args[0], args[1]))
            if text is None:
                problems.append(f"{name}: `{args[0]} {args[1]}` is not a command the CLI accepts")
                continue
            for flag in (a.split("=", 1)[0] for a in args[2:] if a.startswith("--")):
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                    problems.append(f"{name}: `{args[0]} {args[1]}` has no option {flag}")
    return problems


def dockerfile_problems(text: str, torch_requirement: str, compose: Compose) -> Problems:
    problems = []
    instructions = parse_dockerfile(text)
    args: dict[str, str] = {}
    base = None
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            args.setdefault(k.strip(), v.strip())
        if word == "FROM":
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), rest.split()[0])
    m = re.fullmatch(r"pytorch/pytorch:(?P<torch>\d+\.\d+\.\d+)-cuda\d+(\.\d+)*-cudnn\d+-(runtime|devel)", base or "")
    if not m:
        problems.append(f"Dockerfile: base image {base!r} is not a CUDA PyTorch image (pytorch/pytorch:X-cudaY-...)")
    elif Version(m["torch"]) not in Requirement(torch_requirement).specifier:
        problems.append(f"Dockerfile: the base image's torch {m['torch']} is outside pyproject's {torch_requirement}")

    users = [rest.split(":")[0] for word, rest in instructions if word == "USER"]
    last_run = max((i for i, (w, _) in enumerate(instructions) if w in ("CMD", "ENTRYPOINT")), default=None)
    last_user = next((rest for w, rest in reversed(instructions[:last_run]) if w == "USER"), None) if last_run else None
    if last_run is None:
        problems.append("Dockerfile: no CMD or ENTRYPOINT")
    if not users or last_user in (None, "root", "0"):
        problems.append(f"Dockerfile: the image runs as root (last USER before CMD: {last_user!r})")

    runs = " ".join(rest for w, rest in instructions if w == "RUN")
    copied = next((i for i, (w, rest) in enumerate(instructions) if w == "COPY" and rest.split()[0] == "."), None)
    installed = copied is not None and any(
        w == "RUN" and re.search(r"pip install(\s+-\S+)*\s+\.(\s|$)", rest) for w, rest in instructions[copied:]
    )
    if not installed:
        problems.append("Dockerfile: the project is never pip-installed from its source (COPY . then pip install .)")
    uses_client = any(
        "ray://" in a
        for s in services(compose).values()
        for a in [*(a for args in all_commands(s) for a in args), *environment(s).values()]
    )
    ray_extras = set()
    for req in re.findall(r"""["']?(ray\[[^\]]*\][^"'\s]*)""", runs):
        ray_extras |= Requirement(req.replace("${RAY_VERSION}", "0")).extras
    if uses_client and "client" not in ray_extras:
        problems.append("Dockerfile: the sweep connects with ray:// but ray[client] is not installed")
    if "default" not in ray_extras:
        problems.append("Dockerfile: ray[default] (Ray's dashboard) is not installed")

    env = " ".join(rest for w, rest in instructions if w == "ENV")
    if not re.search(r"PYTHONUNBUFFERED=1", env):
        problems.append("Dockerfile: PYTHONUNBUFFERED=1 is not set")
    workdirs = [rest for w, rest in instructions if w == "WORKDIR"]
    if not workdirs or not RUNS_TARGET.startswith(workdirs[-1].rstrip("/") + "/"):
        problems.append(f"Dockerfile: final WORKDIR {workdirs[-1:]} is not the parent of {RUNS_TARGET}")
    for w, rest in instructions:
        if w in ("ENV", "ARG") and SECRET_NAME.search(rest.split("=")[0]):
            problems.append(f"Dockerfile: {w} {rest.split('=')[0]} bakes a secret into the image")
    return problems


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether docker leaves ``path`` out of the build context: the last pattern matching it or a parent wins."""
    from fnmatch import fnmatchcase

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().rstrip("/").removeprefix("./")
        variants = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatchcase(c, p) for c in candidates for p in variants):
            ignored = not negate
    return ignored


def dockerignore_problems(text: str) -> Problems:
    patterns = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    problems = []
    for path in (".git/HEAD", ".venv/bin/python", ".env", "runs/x/model.pt", "hpo.db", "hpo/__pycache__/cli.pyc"):
        if not dockerignored(path, patterns):
            problems.append(f".dockerignore: {path} would be sent to the build (and maybe into the image)")
    for path in ("pyproject.toml", "hpo/cli.py", "trials/train.py", "storage/factory.py", "docker/healthcheck.py"):
        if dockerignored(path, patterns):
            problems.append(f".dockerignore: {path} is left out, but the image needs it")
    return problems


# --------------------------------------------------------------------------------------------------
# Fixtures


@functools.cache
def real_help(command: tuple[str, ...]) -> str | None:
    """The help of ``<program> <sub>`` from this environment's real CLI (``hpo`` run as a subprocess); None when
    the CLI has no such subcommand."""
    program, sub = command
    if program == "ray":  # Ray's CLI is click: ask it in this process, sparing a second start-up of Ray
        import click
        from ray.scripts.scripts import cli

        parent = click.Context(cli, info_name="ray")
        cmd = cli.get_command(parent, sub)
        return None if cmd is None else cmd.get_help(click.Context(cmd, info_name=sub, parent=parent))
    exe = BIN / program
    if not exe.exists():
        pytest.fail(f"{exe} not found: install the project (make install)")
    proc = subprocess.run(
        [str(exe), sub, "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, **CLI_ENV}
    )
    return proc.stdout if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    """.env.example's values, with stand-ins for the secrets it rightly leaves empty."""
    values, _ = parse_env_file(ENV_EXAMPLE.read_text())
    return {k: (v or f"test-{k.lower().replace('_', '-')}") for k, v in values.items()}


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def torch_requirement() -> str:
    m = re.search(r'"(torch\s*[<>=!~][^"]*)"', (REPO / "pyproject.toml").read_text())
    assert m, "pyproject.toml has no torch requirement"
    return m[1]


# --------------------------------------------------------------------------------------------------
# The files as committed


def test_vendored_schema_is_the_one_its_readme_names() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest in (SCHEMA_FILE.parent / "README.md").read_text(), "update tests/data/README.md with the new digest"


def test_compose_file_is_valid_under_the_compose_specification(compose, example_env, schema_validator) -> None:
    assert schema_validator.META_SCHEMA["$id"].startswith("https://json-schema.org/draft/2020-12"), "the draft"
    errors = sorted(schema_validator.iter_errors(interpolate(compose, example_env)), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_compose_refuses_to_start_without_the_secrets(compose, example_env) -> None:
    for secret in ("POSTGRES_PASSWORD", "HPO_DASHBOARD_TOKEN", "RAY_AUTH_TOKEN"):
        without = {k: v for k, v in example_env.items() if k != secret}
        with pytest.raises(InterpolationError, match=f"{secret}.*set {secret} in .env"):
            interpolate(compose, without)
        with pytest.raises(InterpolationError, match=secret):
            interpolate(compose, {**without, secret: ""})


def test_storage_url_reaches_the_services_whole(compose, example_env) -> None:
    resolved = interpolate(compose, example_env)
    url = environment(resolved["services"][DASHBOARD])["HPO_STORAGE"]
    assert url == "postgresql+psycopg2://hpo:test-postgres-password@postgres:5432/hpo"
    assert environment(resolved["services"][SWEEP])["HPO_STORAGE"] == url


@pytest.mark.parametrize(
    "rule",
    [
        healthcheck_problems,
        depends_on_problems,
        secret_problems,
        port_problems,
        worker_problems,
        storage_url_problems,
        dashboard_problems,
        image_problems,
        sweep_problems,
        volume_problems,
    ],
    ids=lambda f: f.__name__,
)
def test_compose_file_keeps_the_rule(compose, rule) -> None:
    assert rule(compose) == []


def test_env_example_documents_every_variable_and_commits_no_secret(compose) -> None:
    assert env_example_problems(compose, ENV_EXAMPLE.read_text()) == []


def test_commands_are_ones_the_real_cli_accepts(compose) -> None:
    wanted = {(a[0], a[1]) for s in services(compose).values() for a in all_commands(s) if a[0] in ("hpo", "ray")}
    with concurrent.futures.ThreadPoolExecutor() as pool:  # each --help is a Python start-up: run them at once
        list(pool.map(real_help, wanted))
    assert cli_problems(compose, real_help) == []


def test_helper_scripts_exist_and_are_copied_into_the_image(compose) -> None:
    assert helper_problems(compose, DOCKERFILE.read_text()) == []


def test_dockerfile(compose, torch_requirement) -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), torch_requirement, compose) == []


def test_dockerignore() -> None:
    assert dockerignore_problems(DOCKERIGNORE.read_text()) == []


def test_compose_builds_from_the_dockerfiles_public_base_by_default(compose) -> None:
    """HPO_BASE_IMAGE unset, compose passes the Dockerfile's own default: one public base, named twice."""
    dockerfile_default = dict(
        rest.partition("=")[::2] for word, rest in parse_dockerfile(DOCKERFILE.read_text()) if word == "ARG"
    )["BASE_IMAGE"]
    for name, svc in services(compose).items():
        if name != POSTGRES:
            arg = svc["build"]["args"]["BASE_IMAGE"]
            assert arg == "${HPO_BASE_IMAGE:-" + dockerfile_default + "}", name
    values, _ = parse_env_file(ENV_EXAMPLE.read_text())
    assert values["HPO_BASE_IMAGE"] == dockerfile_default
    assert values["HPO_POSTGRES_IMAGE"] == default_of(compose["services"][POSTGRES]["image"])


def test_env_example_config_exists_and_names_the_study_the_readme_uses(compose, example_env) -> None:
    """The sweep's config mount needs an existing file (compose refuses a missing bind source), and the
    walkthrough's `hpo status --study NAME` must name the study that config makes."""
    resolved = interpolate(compose, example_env)
    config = next(m for m in volume_mounts(resolved["services"][SWEEP]) if m["target"].endswith(".yaml"))
    assert (REPO / config["source"]).is_file(), config
    study = Path(config["target"]).stem
    assert f"--study {study}" in (REPO / "README.md").read_text()


def test_compose_test_script_and_config() -> None:
    """make compose-test's script parses, and its sweep config validates with the real CLI."""
    proc = subprocess.run(["bash", "-n", str(REPO / "docker" / "compose_test.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [str(BIN / "hpo"), "validate", str(REPO / "docker" / "compose_test.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **CLI_ENV},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def committed_files() -> list[Path]:
    """The files this feature commits, which must carry no secret."""
    files = [COMPOSE_FILE, DOCKERFILE, ENV_EXAMPLE, DOCKERIGNORE]
    files += sorted(f for f in (REPO / "docker").rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    return files + sorted((REPO / "storage" / "init").glob("*"))


def literal_secrets(name: str, text: str) -> Problems:
    """Literal secrets in a file's text: ``KEY=value`` or ``KEY: value`` with a secret's name, or a URL password.
    ``${VAR}`` references, ``$$`` escapes, shell ``$VAR`` and ``$(command)``, ``<placeholders>`` and comment
    lines are not secrets; in Python only a quoted value is (``token: str`` is an annotation)."""
    assignment = re.compile(r"(?P<key>\w*(PASSWORD|TOKEN|SECRET)\w*)\s*[:=]\s*(?P<value>[^\s#]+)", re.IGNORECASE)
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        line = re.sub(r"\$\{[^}]*\}", "${}", line)  # a reference names a secret; it is not one
        for m in assignment.finditer(line):
            if name.endswith(".py") and not m["value"].startswith(("'", '"')):
                continue
            value = m["value"].strip("'\",")
            if value and not value.startswith(("$", "<")) and not re.fullmatch(r"\W*", value):
                found.append(f"{name}:{n}: {m['key']}={value}")
        for m in re.finditer(r"://[^/\s:@]*:(?P<password>[^@\s]*)@", line):
            if not m["password"].startswith("${"):
                found.append(f"{name}:{n}: URL password {m['password']!r}")
    return found


def test_no_committed_file_carries_a_secret() -> None:
    found = [p for path in committed_files() for p in literal_secrets(str(path.relative_to(REPO)), path.read_text())]
    assert found == []


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        (COMPOSE_FILE, "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}@", "hunter2@"),
        (COMPOSE_FILE, "HPO_DASHBOARD_TOKEN: ${HPO_DASHBOARD_TOKEN:?", "HPO_DASHBOARD_TOKEN: abc123 #${x:?"),
        (ENV_EXAMPLE, "RAY_AUTH_TOKEN=\n", "RAY_AUTH_TOKEN=0123abcd\n"),
        (DOCKERFILE, "ARG HPO_UID=1000", "ENV POSTGRES_PASSWORD=hunter2"),
        (REPO / "docker" / "compose_test.sh", "RAY_AUTH_TOKEN=$(secret)", "RAY_AUTH_TOKEN=0123abcd"),
        (REPO / "docker" / "compose_probe.py", 'BEARER_FROM = "HPO_DASHBOARD_TOKEN"', 'TOKEN = "0123abcd"'),
    ],
    ids=["url password", "dashboard token", "ray token in .env.example", "Dockerfile ENV", "script", "python"],
)
def test_literal_secrets_are_found(path, old, new) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer contains {old!r}: update this test"
    assert literal_secrets(path.name, text.replace(old, new, 1))


# --------------------------------------------------------------------------------------------------
# Every rule catches what it is for: mutated copies of the committed files


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    """A mutation setting the dotted ``path`` (list indexes as numbers) to ``value``; None deletes."""

    def mutate(c: Compose) -> None:
        *parents, last = path.split(".")
        node: Any = c
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is None:
            del node[int(last) if isinstance(node, list) else last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return mutate


COMPOSE_MUTATIONS = [
    ("no postgres healthcheck", _set("services.postgres.healthcheck", None), healthcheck_problems, "no health check"),
    (
        "ray-head healthcheck disabled",
        _set("services.ray-head.healthcheck", {"disable": True}),
        healthcheck_problems,
        "no health check",
    ),
    (
        "depends_on as a list",
        _set("services.dashboard.depends_on", ["postgres"]),
        depends_on_problems,
        "is a list",
    ),
    (
        "depends_on service_started",
        _set("services.ray-worker.depends_on.ray-head.condition", "service_started"),
        depends_on_problems,
        "not service_healthy",
    ),
    (
        "waits on a service without a healthcheck",
        _set("services.ray-worker.depends_on", {"storage-init": {"condition": "service_healthy"}}),
        depends_on_problems,
        "has no health check",
    ),
    (
        "literal postgres password",
        _set("services.postgres.environment.POSTGRES_PASSWORD", "hunter2"),
        secret_problems,
        "hunter2",
    ),
    (
        "password with a default",
        _set("services.postgres.environment.POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-hunter2}"),
        secret_problems,
        "required",
    ),
    (
        "literal password in the storage URL",
        _set("services.dashboard.environment.HPO_STORAGE", "postgresql+psycopg2://hpo:hunter2@postgres/hpo"),
        secret_problems,
        "literal password",
    ),
    (
        "literal dashboard token",
        _set("services.dashboard.environment.HPO_DASHBOARD_TOKEN", "abc123"),
        secret_problems,
        "HPO_DASHBOARD_TOKEN",
    ),
    (
        "dashboard on all interfaces",
        _set("services.dashboard.ports", ["0.0.0.0:8080:8080"]),
        port_problems,
        "not bound to 127.0.0.1",
    ),
    ("dashboard port without an IP", _set("services.dashboard.ports", ["8080:8080"]), port_problems, "not bound"),
    (
        "Ray dashboard bound through a variable",
        _set("services.ray-head.ports", ["${BIND:-127.0.0.1}:8265:8265"]),
        port_problems,
        "not bound",
    ),
    (
        "postgres published, long syntax",
        _set("services.postgres.ports", [{"target": 5432, "published": 5432}]),
        port_problems,
        "not bound",
    ),
    ("host networking", _set("services.ray-head.network_mode", "host"), port_problems, "network_mode host"),
    ("worker without GPUs", _set("services.ray-worker.deploy", None), worker_problems, "GPU device reservation"),
    (
        "worker with a container_name",
        _set("services.ray-worker.container_name", "worker"),
        worker_problems,
        "container_name",
    ),
    ("worker with a host port", _set("services.ray-worker.ports", ["127.0.0.1:9000:9000"]), worker_problems, "ports"),
    (
        "storage URL on a command line",
        _set("services.sweep.command", ["hpo", "sweep", "/work/config.yaml", "--storage", "${HPO_STORAGE}"]),
        storage_url_problems,
        "on a command line",
    ),
    (
        "dashboard without HPO_STORAGE",
        _set("services.dashboard.environment.HPO_STORAGE", None),
        storage_url_problems,
        "HPO_STORAGE is not in its environment",
    ),
    (
        "workers given database credentials",
        _set("services.ray-worker.environment.HPO_STORAGE", "${HPO_STORAGE:?x}"),
        storage_url_problems,
        "credentials",
    ),
    (
        "dashboard without a token",
        _set("services.dashboard.environment.HPO_DASHBOARD_TOKEN", None),
        dashboard_problems,
        "without a required HPO_DASHBOARD_TOKEN",
    ),
    (
        "token on the dashboard's command line",
        _set("services.dashboard.command", ["hpo", "dashboard", "--host", "0.0.0.0", "--token", "${T:?x}"]),
        dashboard_problems,
        "process list",
    ),
    ("worker on another image", _set("services.ray-worker.image", "rayproject/ray:2.60.0"), image_problems, "one"),
    ("sweep not built here", _set("services.sweep.build", "./elsewhere"), image_problems, "not built from"),
    ("postgres unpinned", _set("services.postgres.image", "postgres:latest"), image_problems, "pin"),
    ("sweep without a profile", _set("services.sweep.profiles", None), sweep_problems, "profile"),
    ("config mounted writable", _set("services.sweep.volumes.0.read_only", False), sweep_problems, "read-only"),
    ("no shared checkpoints", _set("services.ray-worker.volumes.0", "other:/work/runs"), sweep_problems, "shared"),
    ("sweep on a local Ray", _set("services.sweep.environment.RAY_ADDRESS", None), sweep_problems, "its own Ray"),
    (
        "sweep elsewhere than the head",
        _set(
            "services.sweep.command", ["hpo", "sweep", "/work/${HPO_STUDY:-quickstart}.yaml", "--ray-address", "auto"]
        ),
        sweep_problems,
        "not the head",
    ),
    ("sweep not waiting for workers", _set("services.sweep.depends_on.ray-worker", None), sweep_problems, "ray-worker"),
    (
        "export lost with the container",
        _set("services.sweep.volumes.1", "runs:/work/runs2"),
        sweep_problems,
        "/work/out",
    ),
    (
        "export folder read-only",
        _set("services.sweep.volumes.1", "${HPO_OUT_DIR:-./out}:/work/out:ro"),
        sweep_problems,
        "/work/out",
    ),
    (
        "worker without a health check",
        _set("services.ray-worker.healthcheck", None),
        healthcheck_problems,
        "ray-worker",
    ),
    (
        "dashboard healthy on any answer",
        _set("services.dashboard.healthcheck.test", ["CMD", "python", "/opt/hpo/docker/healthcheck.py", "http://h/"]),
        dashboard_problems,
        "401 or 500",
    ),
    (
        "postgres unpinned through a variable",
        _set("services.postgres.image", "${HPO_POSTGRES_IMAGE:-postgres:latest}"),
        image_problems,
        "pin",
    ),
    ("undeclared volume", _set("volumes.runs", None), volume_problems, "not declared"),
]


@pytest.mark.parametrize(
    ("mutate", "rule", "expected"), [m[1:] for m in COMPOSE_MUTATIONS], ids=[m[0] for m in COMPOSE_MUTATIONS]
)
def test_rule_catches_a_mutated_compose_file(compose, mutate, rule, expected) -> None:
    mutated = copy.deepcopy(compose)
    mutate(mutated)
    problems = rule(mutated)
    assert any(expected in p for p in problems), problems


def test_schema_catches_an_invalid_compose_file(compose, example_env, schema_validator) -> None:
    for mutate in (
        _set("services.ray-worker.deploy.resources.reservations.devices.0.capabilities", "gpu"),
        _set("services.dashboard.portz", ["127.0.0.1:8080:8080"]),
        _set("services.postgres.healthcheck.retries", [3]),
        _set("services.sweep.depends_on.ray-head.condition", 7),
    ):
        mutated = copy.deepcopy(compose)
        mutate(mutated)
        assert list(schema_validator.iter_errors(interpolate(mutated, example_env)))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (r"(?m)^HPO_DASHBOARD_TOKEN=$", "HPO_DASHBOARD_TOKEN=s3cret", "must be empty"),
        (r"(?m)^POSTGRES_PASSWORD=$", "POSTGRES_PASSWORD=change-me", "must be empty"),
        (r"(?m)^HPO_IMAGE=.*$", "HPO_IMAGE=hpo:latest\n# not used\nNOT_IN_COMPOSE=1", "does not use it"),
        (r"(?m)^#[^\n]*\nDASHBOARD_PORT=", "DASHBOARD_PORT=", "DASHBOARD_PORT has no comment line"),
        (r"(?m)^#[^\n]*\nRAY_SHM_SIZE=[^\n]*\n", "", "RAY_SHM_SIZE is used by docker-compose.yml but not listed"),
    ],
)
def test_env_example_rule_catches(compose, old, new, expected) -> None:
    text, n = re.subn(old, new, ENV_EXAMPLE.read_text(), count=1)
    assert n == 1, f".env.example no longer matches {old!r}: update this test"
    problems = env_example_problems(compose, text)
    assert any(expected in p for p in problems), problems


def test_env_example_rule_catches_an_undocumented_variable(compose) -> None:
    mutated = copy.deepcopy(compose)
    mutated["services"][DASHBOARD]["environment"]["HPO_THREADS"] = "${HPO_THREADS:-8}"
    assert any("HPO_THREADS is used" in p for p in env_example_problems(mutated, ENV_EXAMPLE.read_text()))


def test_cli_rule_catches_unknown_commands_and_flags(compose) -> None:
    mutated = copy.deepcopy(compose)
    mutated["services"][SWEEP]["command"] = ["hpo", "sweep", "/work/config.yaml", "--ray-adress", "ray://h:1"]
    mutated["services"][DASHBOARD]["command"] = ["hpo", "dashbord", "--host", "0.0.0.0"]
    mutated["services"]["ray-head"]["command"] = ["ray", "start", "--head", "--client-server-port=10001"]
    problems = cli_problems(mutated, real_help)
    assert any("no option --ray-adress" in p for p in problems), problems
    assert any("`hpo dashbord` is not a command" in p for p in problems), problems
    assert any("no option --client-server-port" in p for p in problems), problems


def test_helper_rule_catches_a_missing_script(compose) -> None:
    mutated = copy.deepcopy(compose)
    mutated["services"][DASHBOARD]["healthcheck"]["test"] = ["CMD", "python", HELPERS_IN_IMAGE + "nope.py"]
    assert any("nope.py does not exist" in p for p in helper_problems(mutated, DOCKERFILE.read_text()))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (r"ARG BASE_IMAGE=\S+", "ARG BASE_IMAGE=python:3.11-slim", "not a CUDA PyTorch image"),
        (r"pytorch/pytorch:[\d.]+-", "pytorch/pytorch:2.15.0-", "outside pyproject"),
        (r"USER hpo", "USER root", "runs as root"),
        (r"(?m)^USER hpo\n", "", "runs as root"),
        (r"pip install --no-deps \.", "pip install --no-deps hpo", "never pip-installed"),
        (r"COPY \. \./", "COPY hpo ./hpo", "never pip-installed"),
        (r"ray\[default,client\]", "ray[default]", "ray[client]"),
        (r"PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0", "PYTHONUNBUFFERED"),
        (r"WORKDIR /work\n", "WORKDIR /app\n", "WORKDIR"),
        (r"ARG HPO_UID=1000", "ARG HPO_UID=1000\nENV POSTGRES_PASSWORD=x", "bakes a secret"),
    ],
)
def test_dockerfile_rule_catches(compose, torch_requirement, old, new, expected) -> None:
    text, n = re.subn(old, new, DOCKERFILE.read_text(), count=1)
    assert n == 1, f"the Dockerfile no longer contains {old!r}: update this test"
    assert any(expected in p for p in dockerfile_problems(text, torch_requirement, compose))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [("!.venv", ".venv/bin/python would be sent"), ("!runs", "runs/x/model.pt"), ("hpo", "hpo/cli.py is left out")],
)
def test_dockerignore_rule_catches(extra, expected) -> None:
    problems = dockerignore_problems(DOCKERIGNORE.read_text() + f"\n{extra}\n")
    assert any(expected in p for p in problems), problems


# --------------------------------------------------------------------------------------------------
# The helpers in docker/, run for real


def _run_script(name: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "docker" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
    )


def test_init_storage_creates_the_schema_once_and_again_harmlessly(tmp_path: Path) -> None:
    db = tmp_path / "studies.db"
    env = {"HPO_STORAGE": f"sqlite:///{db}", "HPO_STORAGE_WAIT_S": "0"}
    for _ in range(2):
        proc = _run_script("init_storage.py", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "storage ready" in proc.stdout
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"studies", "trials", "version_info"} <= tables


def test_init_storage_fails_cleanly_and_masks_the_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "docker" / "init_storage.py")], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2 and "HPO_STORAGE is not set" in proc.stderr

    closed = _free_port()  # nothing listens there: the database cannot be reached
    url = f"postgresql+psycopg2://hpo:Pl4nted-S3cret@127.0.0.1:{closed}/hpo"
    proc = _run_script("init_storage.py", env={"HPO_STORAGE": url, "HPO_STORAGE_WAIT_S": "0"}, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Pl4nted-S3cret" not in proc.stdout + proc.stderr


def test_dashboard_command_refuses_to_run_without_its_token(compose, tmp_path: Path) -> None:
    """The compose command as is, without HPO_DASHBOARD_TOKEN: hpo must refuse to listen on 0.0.0.0."""
    args = argv(compose["services"][DASHBOARD]["command"])
    env = {k: v for k, v in os.environ.items() if k != "HPO_DASHBOARD_TOKEN"}
    env.update(CLI_ENV, HPO_STORAGE=f"sqlite:///{tmp_path / 'none.db'}")
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "HPO_DASHBOARD_TOKEN" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_status() -> Iterator[int]:
    """A server on loopback answering the status its path names: /200, /401 (the dashboard without its
    token), /500 (a dashboard that cannot read its database)."""
    with http_server(lambda path: int(path.strip("/"))) as port:
        yield port


def test_healthcheck_probe(http_status: int, tmp_path: Path) -> None:
    closed = _free_port()
    server = f"http://127.0.0.1:{http_status}"
    token = ["--bearer-env", "PROBE_TOKEN"]
    cases = [
        ([f"{server}/200"], 0),
        ([f"{server}/401"], 0),  # no token sent: a refusal is an answer, the server is up
        ([f"{server}/500"], 1),  # up but broken: never healthy
        ([f"{server}/200", *token], 0),
        ([f"{server}/401", *token], 1),  # the token was sent and refused
        ([f"{server}/500", *token], 1),
        ([f"tcp://127.0.0.1:{http_status}"], 0),
        ([f"http://127.0.0.1:{closed}/"], 1),
        ([f"tcp://127.0.0.1:{closed}"], 1),
        (["ftp://127.0.0.1/"], 2),
        ([f"{server}/200", "--bearer-env", "UNSET_PROBE_TOKEN"], 2),
        ([f"{server}/200", "--token", "x"], 2),
    ]
    for args, code in cases:
        proc = _run_script("healthcheck.py", *args, env={"PROBE_TOKEN": "Pl4nted-T0ken"}, cwd=tmp_path)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Pl4nted-T0ken" not in proc.stdout + proc.stderr


class _ComposeOverrideLoader(yaml.SafeLoader):
    """Compose's override files may use its `!reset` tag, which plain YAML does not know."""


_ComposeOverrideLoader.add_constructor("!reset", lambda loader, node: {"__reset__": True})


def test_cpu_override_resets_exactly_the_gpu_reservation() -> None:
    override = yaml.load((REPO / "docker" / "compose.cpu.yml").read_text(), Loader=_ComposeOverrideLoader)
    assert override == {"services": {"ray-worker": {"deploy": {"__reset__": True}}}}
    worker = services(load_compose())["ray-worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"], "the base file reserves GPUs for the worker"
