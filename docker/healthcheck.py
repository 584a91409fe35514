#!/usr/bin/env python3
"""Container health probes for docker-compose.yml, using the standard library only (no curl in the image).

    healthcheck.py http://127.0.0.1:8080/    healthy when the server answers HTTP at all; a 401 counts,
                                             since the dashboard rightly refuses a probe without its token
    healthcheck.py tcp://127.0.0.1:10001     healthy when the port accepts a connection

Exit code 0 healthy, 1 not (with one line saying why), 2 a bad argument.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

TIMEOUT_S = 5.0


def probe(target: str, timeout: float = TIMEOUT_S) -> str | None:
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
        try:
            urllib.request.urlopen(target, timeout=timeout).close()
        except urllib.error.HTTPError:
            return None  # an HTTP status, even 401 or 500, means the server is up and answering
        except (OSError, urllib.error.URLError) as e:
            return f"{target}: {getattr(e, 'reason', e)}"
        return None
    raise ValueError(f"expected an http://, https:// or tcp:// address, got {target!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        problem = probe(argv[0])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
