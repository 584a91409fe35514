#!/usr/bin/env python3
"""Reads a study from the hpo dashboard's API, for docker/compose_test.sh (standard library only).

    compose_probe.py auth   BASE_URL          401 without the token and 200 with it, or exit 1
    compose_probe.py counts BASE_URL STUDY    one line: trials by state, e.g. "Complete=3 Running=2"
    compose_probe.py trials BASE_URL STUDY    a JSON summary: counts, and per trial its number, state,
                                              node, attempt, retry_of, retried_by, fail_kind, fail_reason

The token is read from $HPO_DASHBOARD_TOKEN and sent as ``Authorization: Bearer``; it is never printed.
A study that does not exist (yet) counts as no trials. Exit code 0, 1 on a failed check or an API error,
2 on a bad argument.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

BEARER_FROM = "HPO_DASHBOARD_TOKEN"
TIMEOUT_S = 20.0
#: user attributes of a trial the summary keeps (hpo.study's ATTR_* names)
KEPT_ATTRS = ("node", "attempt", "retry_of", "retried_by", "fail_kind", "fail_reason", "resumed_from_epoch")


def get(base: str, path: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(base.rstrip("/") + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def token() -> str:
    value = os.environ.get(BEARER_FROM, "")
    if not value:
        raise SystemExit(f"error: {BEARER_FROM} is not set")
    return value


def study_trials(base: str, name: str) -> list[dict[str, Any]]:
    status, listing = get(base, "/api/studies", token())
    if status != 200:
        raise RuntimeError(f"GET /api/studies: HTTP {status}")
    ids = [s["study_id"] for s in listing["study_summaries"] if s["study_name"] == name]
    if not ids:
        return []
    status, detail = get(base, f"/api/studies/{ids[0]}", token())
    if status != 200:
        raise RuntimeError(f"GET /api/studies/{ids[0]}: HTTP {status}")
    trials: list[dict[str, Any]] = detail["trials"]
    return trials


def summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for t in trials:
        attrs = {a["key"]: a["value"] for a in t.get("user_attrs", [])}
        rows.append({"number": t["number"], "state": t["state"], **{k: attrs[k] for k in KEPT_ATTRS if k in attrs}})
    return {"counts": dict(Counter(t["state"] for t in trials)), "trials": rows}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("auth", "counts", "trials"):
        print(__doc__, file=sys.stderr)
        return 2
    command, base = argv[0], argv[1]
    try:
        if command == "auth":
            without, _ = get(base, "/api/studies", None)
            with_token, _ = get(base, "/api/studies", token())
            print(f"GET /api/studies: {without} without the token, {with_token} with it")
            return 0 if (without, with_token) == (401, 200) else 1
        if len(argv) != 3:
            print(__doc__, file=sys.stderr)
            return 2
        result = summary(study_trials(base, argv[2]))
        if command == "counts":
            print(" ".join(f"{k}={v}" for k, v in sorted(result["counts"].items())) or "none")
        else:
            print(json.dumps(result, indent=1))
        return 0
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
