"""``hpo dashboard``: optuna-dashboard on a study storage, served by waitress, behind an optional token.

optuna-dashboard has no authentication, and its API can rename and delete studies and tell trials
(FACTS.md). So the dashboard binds to loopback by default, and binding anywhere else needs a token:
every request must then carry it as ``Authorization: Bearer <token>`` or in the ``hpo_dashboard_token``
cookie, which opening ``/?token=<token>`` once sets.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from hpo.errors import ConfigError
from storage import close_storage, open_storage, storage_errors

#: Environment variable the CLI reads the token from when ``--token`` is not given.
TOKEN_ENV = "HPO_DASHBOARD_TOKEN"
#: The cookie a ``?token=`` visit sets, and the query parameter that sets it.
COOKIE_NAME = "hpo_dashboard_token"
QUERY_PARAM = "token"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_UNAUTHORIZED = (
    b"401 Unauthorized: this hpo dashboard needs its token. Open it once as /?token=<token> "
    b"(sets a cookie), or send the header 'Authorization: Bearer <token>'.\n"
)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the dashboard beyond loopback without a token (it can delete studies)."""
    if token is not None and not token.strip():
        raise ConfigError(f"--token is empty; pass a non-empty token or unset {TOKEN_ENV}")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host} exposes the dashboard, which can delete studies: set --token or {TOKEN_ENV}")


class TokenMiddleware:
    """Pure WSGI: lets a request through only if it carries ``token`` (bearer header or cookie).

    A GET or HEAD with ``?token=<token>`` gets the cookie (HttpOnly, SameSite=Lax, Path=/) and a 302 to
    the same path without the parameter, so the token leaves the address bar and browser history.
    With ``token=None`` every request passes. The token is never logged.

    Why Lax, not Strict: a ``?token=`` link clicked on another site (chat, e-mail, a wiki) is a cross-site
    navigation, and Chromium does not send a Strict cookie on the redirect that follows it, so the user
    would land on a 401. Lax still keeps the cookie off cross-site POST, PUT and DELETE, the requests
    that change studies.
    """

    def __init__(self, app: WSGIApp, token: str | None) -> None:
        if token is not None and not token:
            raise ConfigError("the dashboard token is empty")
        self.app = app
        self._token = None if token is None else token.encode("utf-8")

    def _matches(self, candidate: str | None) -> bool:
        if candidate is None or self._token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self._token is None:
            return self.app(environ, start_response)
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        given = [v for k, v in query if k == QUERY_PARAM]
        if given and environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD"):
            if not self._matches(given[-1]):
                return self._deny(start_response)
            rest = [(k, v) for k, v in query if k != QUERY_PARAM]
            return _redirect_with_cookie(environ, start_response, rest, given[-1])
        if self._matches(_bearer(environ)) or self._matches(_cookie(environ)):
            return self.app(environ, start_response)
        return self._deny(start_response)

    @staticmethod
    def _deny(start_response: StartResponse) -> Iterable[bytes]:
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(_UNAUTHORIZED))),
                ("WWW-Authenticate", 'Bearer realm="hpo dashboard"'),
                ("Cache-Control", "no-store"),
            ],
        )
        return [_UNAUTHORIZED]


def _redirect_with_cookie(
    environ: dict[str, Any], start_response: StartResponse, rest: list[tuple[str, str]], token: str
) -> Iterable[bytes]:
    """302 to the same path and query without the token parameter, setting the token cookie."""
    # PATH_INFO is the decoded path as latin-1 text (PEP 3333); quote it back for the header.
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
    location = quote(path.encode("latin-1", "replace"), safe="/:@!$&'()*+,;=-._~")
    if not location.startswith("/") or location.startswith("//"):
        location = "/"  # a relative redirect that never leaves this host
    if rest:
        location += "?" + urlencode(rest)
    start_response(
        "302 Found",
        [
            ("Location", location),
            ("Set-Cookie", f"{COOKIE_NAME}={quote(token, safe='')}; Path=/; HttpOnly; SameSite=Lax"),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", "0"),
        ],
    )
    return [b""]


def _bearer(environ: dict[str, Any]) -> str | None:
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _cookie(environ: dict[str, Any]) -> str | None:
    # Split by hand: http.cookies stops at the first cookie it cannot parse, and a browser sends this
    # host's cookies from every other app on every other port too (JSON values, odd characters...).
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE_NAME:
            return unquote(value.strip().strip('"'))
    return None


class DashboardApp:
    """The WSGI app ``make_app`` returns: optuna-dashboard behind ``TokenMiddleware``. It owns the
    storage it reads; ``close()`` disposes the storage's connection pool."""

    def __init__(self, app: WSGIApp, storage: Any) -> None:
        self._app = app
        self.storage = storage

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self._app(environ, start_response)

    def close(self) -> None:
        close_storage(self.storage)


def make_app(storage_url: str, token: str | None) -> DashboardApp:
    """optuna-dashboard's WSGI app for the studies in ``storage_url``, requiring ``token`` when one is given.

    The storage is opened like every hpo reader (bounded pool, pre-ping, no schema creation); the
    caller closes the returned app when done.
    """
    from optuna_dashboard import wsgi

    if token is not None and not token.strip():
        raise ConfigError(f"--token is empty; pass a non-empty token or unset {TOKEN_ENV}")
    storage = open_storage(storage_url, create_schema=False)
    try:
        with storage_errors(storage_url, "cannot open storage"):
            inner = wsgi(storage)
    except BaseException:
        close_storage(storage)
        raise
    return DashboardApp(TokenMiddleware(inner, token), storage)


def serve(
    storage_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    threads: int = 8,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard with waitress until SIGINT or SIGTERM, then stop accepting, close every
    connection, dispose the storage's pool and return.

    ``ready(url)`` is called with the server's http URL (without the token) once it listens. Signals are
    handled only when called from the main thread.
    """
    import waitress.server

    check_bind(host, token)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    app = make_app(storage_url, token)
    server: Any = None
    try:
        with _interrupt_on(signal.SIGINT, signal.SIGTERM):
            try:
                server = waitress.server.create_server(
                    app,
                    host=host.strip("[]"),
                    port=port,
                    threads=threads,
                    ident="hpo",
                    clear_untrusted_proxy_headers=True,
                )
            except OSError as e:
                raise ConfigError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
            if ready is not None:
                ready(_http_url(host, server))
            server.run()  # returns after dispatching KeyboardInterrupt (our signals) itself
    except KeyboardInterrupt:
        pass  # a signal before the loop started: same clean shutdown
    finally:
        if server is not None:
            _close_server(server)
        app.close()


def _http_url(host: str, server: Any) -> str:
    listen = getattr(server, "effective_listen", None)
    bound_port = listen[0][1] if listen else server.effective_port
    shown = host.strip("[]") or "127.0.0.1"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{bound_port}/"


def _close_server(server: Any) -> None:
    """Stop accepting (close the listening sockets and open channels), then stop the worker threads."""
    from waitress import wasyncore

    wasyncore.close_all(getattr(server, "_map", None) or getattr(server, "map", {}), ignore_all=True)
    server.task_dispatcher.shutdown(timeout=5)


@contextlib.contextmanager
def _interrupt_on(*signals: signal.Signals) -> Iterator[None]:
    """Turn ``signals`` into KeyboardInterrupt (which waitress's loop handles) while inside; main thread only."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for s in signals:
            previous[s] = signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
