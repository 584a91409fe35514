#!/usr/bin/env python3
"""Container health probes for docker-compose.yml, using the standard library only (no curl in the image).

    healthcheck.py http://127.0.0.1:8080/api/studies --bearer-env HPO_DASHBOARD_TOKEN
        healthy when the server answers 2xx or 3xx to a request carrying the token read from that
        environment variable (never from the command line, where `ps` would show it): the dashboard
        is up *and* reads its database
    healthcheck.py http://127.0.0.1:8080/
        without a token: healthy when the server answers below 500; a 401 or 403 counts, since the
        dashboard rightly refuses a probe without its token
    healthcheck.py tcp://127.0.0.1:10001
        healthy when the port accepts a connection

An HTTP 5xx is never healthy (a server that answers "500 Internal Server Error" is up but broken), and
with a token neither is a 4xx. Exit code 0 healthy, 1 not (with one line saying why), 2 a bad argument.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

TIMEOUT_S = 5.0
BEARER_OPTION = "--bearer-env"


def probe(target: str, token: str | None = None, timeout: float = TIMEOUT_S) -> str | None:
    """None when ``target`` is up, else why not."""
    parts = urlsplit(target)
    if parts.scheme == "tcp":
        if not parts.hostname or not parts.port:
            raise ValueError(f"expected tcp://HOST:PORT, got {target!r}")
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=timeout).close()
        except OSError as e:
            return f"{target}: {e}"
        return None
    if parts.scheme in ("http", "https"):
        request = urllib.request.Request(target)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            urllib.request.urlopen(request, timeout=timeout).close()
        except urllib.error.HTTPError as e:
            if e.code >= 500 or token is not None or e.code not in (401, 403):
                return f"{target}: HTTP {e.code}"
            return None  # no token sent: a refusal means the server is up and guarding itself
        except (OSError, urllib.error.URLError) as e:
            return f"{target}: {getattr(e, 'reason', e)}"
        return None
    raise ValueError(f"expected an http://, https:// or tcp:// address, got {target!r}")


def parse(argv: list[str]) -> tuple[str, str | None]:
    """The target and the token (read from the variable ``--bearer-env NAME`` names, if given)."""
    if len(argv) == 1:
        return argv[0], None
    if len(argv) == 3 and argv[1] == BEARER_OPTION:
        token = os.environ.get(argv[2], "")
        if not token:
            raise ValueError(f"{BEARER_OPTION} {argv[2]}: the variable is not set or empty")
        return argv[0], token
    raise ValueError(f"expected TARGET [{BEARER_OPTION} VARIABLE], got {' '.join(argv)!r}")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        target, token = parse(argv)
        problem = probe(target, token)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
