"""The dashboard: the token middleware and the bind check as tables, then the real server (waitress, a
real PostgreSQL) as a subprocess, and the real app in headless Chromium."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import sqlalchemy

from hpo.errors import ConfigError
from hpo.views.dashboard import COOKIE_NAME, TOKEN_ENV, TokenMiddleware, check_bind, make_app, serve
from storage import POOL_SIZE, StorageError, close_storage, open_storage
from tests.browser import (
    DemoStudy,
    chromium,
    requested_urls,
    require_chromium,
    screenshot_path,
    severe_errors,
    write_demo_study,
)
from tests.conftest import REPO, run_cli

TOKEN = "t0k-en/with+odd=chars;"
SECRET = "Pl4nted-S3cret"

# --- the token middleware, driven with real WSGI calls ------------------------------------------


def hello_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    environ["test.calls"].append(environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    reached_app: bool


def call(app: Any, path: str = "/", query: str = "", method: str = "GET", **headers: str) -> Response:
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": method}
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    setup_testing_defaults(environ)
    calls: list[str] = []
    environ["test.calls"] = calls
    got: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        got["status"] = int(status.split()[0])
        got["headers"] = dict(response_headers)

    body = b"".join(app(environ, start_response))
    return Response(got["status"], got["headers"], body, bool(calls))


def cookie(value: str) -> str:
    from urllib.parse import quote

    return f"{COOKIE_NAME}={quote(value, safe='')}"


@pytest.mark.parametrize(
    ("token", "request_kwargs", "status"),
    [
        (None, {}, 200),
        (None, {"authorization": "Bearer anything"}, 200),
        ("s3cret", {}, 401),
        ("s3cret", {"authorization": "Bearer wrong"}, 401),
        ("s3cret", {"authorization": "Bearer s3cre"}, 401),  # a prefix is not the token
        ("s3cret", {"authorization": "Bearer s3cret"}, 200),
        ("s3cret", {"authorization": "bearer s3cret"}, 200),  # the scheme is case-insensitive
        ("s3cret", {"authorization": "Basic s3cret"}, 401),
        ("s3cret", {"cookie": cookie("s3cret")}, 200),
        ("s3cret", {"cookie": "theme=dark; " + cookie("s3cret") + "; x=1"}, 200),
        ("s3cret", {"cookie": cookie("wrong")}, 401),
        ("s3cret", {"cookie": 'prefs={"a": [1, 2]}; broken="x; ' + cookie("s3cret")}, 200),  # other apps' cookies
        ("s3cret", {"cookie": 'broken="x; ' + cookie("s3cret")[:-1]}, 401),
        ("s3cret", {"query": "token=wrong"}, 401),
        ("s3cret", {"query": "token=s3cret", "method": "POST"}, 401),  # the query sets a cookie on GET only
        (TOKEN, {"cookie": cookie(TOKEN)}, 200),
        (TOKEN, {"authorization": f"Bearer {TOKEN}"}, 200),
    ],
)
def test_token_middleware(token: str | None, request_kwargs: dict[str, str], status: int) -> None:
    r = call(TokenMiddleware(hello_app, token), "/api/studies", **request_kwargs)
    assert r.status == status
    assert r.reached_app == (status == 200)
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.headers["Content-Type"].startswith("text/plain")
        assert b"401 Unauthorized" in r.body
        assert "Set-Cookie" not in r.headers
        assert token is not None and token.encode() not in r.body
    else:
        assert r.body == b"hello"


@pytest.mark.parametrize(
    ("path", "query", "location"),
    [
        ("/", "token={t}", "/"),
        ("/dashboard/studies/3", "token={t}", "/dashboard/studies/3"),
        ("/dashboard/studies/3", "x=1&token={t}&y=a+b", "/dashboard/studies/3?x=1&y=a+b"),
        ("//evil.example/", "token={t}", "/"),  # never a redirect to another host
    ],
)
def test_query_token_sets_cookie_and_redirects_without_it(path: str, query: str, location: str) -> None:
    from urllib.parse import quote

    app = TokenMiddleware(hello_app, TOKEN)
    r = call(app, path, query.format(t=quote(TOKEN, safe="")))
    assert r.status == 302
    assert not r.reached_app
    assert r.headers["Location"] == location
    assert "token" not in r.headers["Location"]
    set_cookie = r.headers["Set-Cookie"]
    assert set_cookie.startswith(cookie(TOKEN) + ";")
    for attr in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert attr in set_cookie.split("; ")
    # the cookie it set is what the next request carries, and it lets that request through
    again = call(app, r.headers["Location"].split("?")[0], cookie=set_cookie.split(";")[0])
    assert again.status == 200 and again.reached_app


@pytest.mark.parametrize(
    ("host", "token", "ok"),
    [
        ("127.0.0.1", None, True),
        ("127.0.0.2", None, True),
        ("localhost", None, True),
        ("::1", None, True),
        ("[::1]", None, True),
        ("0.0.0.0", None, False),
        ("::", None, False),
        ("192.168.1.20", None, False),
        ("dashboard.example.com", None, False),  # a name may resolve to anything
        ("0.0.0.0", "s3cret", True),
        ("192.168.1.20", "s3cret", True),
        ("127.0.0.1", "", False),  # an empty token is a mistake, not "no token"
        ("0.0.0.0", "   ", False),
    ],
)
def test_check_bind(host: str, token: str | None, ok: bool) -> None:
    if ok:
        check_bind(host, token)
        return
    with pytest.raises(ConfigError) as e:
        check_bind(host, token)
    message = str(e.value)
    assert "\n" not in message
    if token is None:
        assert message == (
            f"--host {host} exposes the dashboard, which can delete studies: set --token or HPO_DASHBOARD_TOKEN"
        )
    else:
        assert "empty" in message


def test_serve_refuses_before_opening_anything(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'nothing.db'}"
    with pytest.raises(ConfigError, match="exposes the dashboard"):
        serve(missing, host="0.0.0.0")
    with pytest.raises(ConfigError, match="--port"):
        serve(missing, port=70000)
    with pytest.raises(StorageError, match="no such file"):
        make_app(missing, None)
    assert not (tmp_path / "nothing.db").exists()  # nothing was created


def test_serve_reports_a_busy_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    close_storage(open_storage(url))  # an empty study storage
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1 port {port}: "):
            serve(url, port=port)


# --- the real server, in a subprocess ----------------------------------------------------------------

_SERVE = """
import os, sys
from hpo.views.dashboard import serve
serve(sys.argv[1], port=0, token=os.environ.get("HPO_DASHBOARD_TOKEN"),
      ready=lambda url: print("ready", url, flush=True))
print("stopped", flush=True)
"""


class Server:
    """A process serving the dashboard, with its output collected by a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line.strip()
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"dashboard exited with {self.proc.returncode} before {prefix!r}:\n{self.output}")
            time.sleep(0.05)
        pytest.fail(f"no {prefix!r} line from the dashboard within {timeout} s:\n{self.output}")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code; the process must go on its own."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the dashboard did not stop within {timeout} s of SIGTERM:\n{self.output}")
        self._reader.join(5)
        return rc


def with_password(url: str) -> str:
    """The test server trusts local connections, so a planted password still connects: it must never be shown."""
    return sqlalchemy.engine.make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def get(url: str, headers: dict[str, str] | None = None, redirect: bool = True) -> tuple[int, Message, bytes]:
    """GET ``url``: status, headers (case-insensitive) and body, for error statuses too."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener() if redirect else urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture
def demo(pg_url: str) -> DemoStudy:
    return write_demo_study(pg_url)


@pytest.fixture
def dashboard(pg_url: str, demo: DemoStudy) -> Iterator[tuple[Server, str]]:
    """``serve()`` in a real subprocess on a free port, reading the demo study; yields it and its URL."""
    env = {**os.environ, TOKEN_ENV: TOKEN}
    server = Server([sys.executable, "-c", _SERVE, with_password(pg_url)], env)
    try:
        url = server.wait_for_line("ready ").split()[1]
        yield server, url.rstrip("/")
    finally:
        server.stop()


@pytest.mark.postgres
def test_server_needs_the_token_and_stops_cleanly(
    dashboard: tuple[Server, str], demo: DemoStudy, pg_url: str, peak_connections: type
) -> None:
    server, base = dashboard
    assert base.startswith("http://127.0.0.1:")
    for path in ("/", "/dashboard", "/api/studies", f"/api/studies/{demo.study_id}", "/static/bundle.js"):
        status, headers, body = get(base + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert demo.name.encode() not in body

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = get(base + "/api/studies", bearer)
    assert status == 200 and demo.name.encode() in body

    from urllib.parse import quote

    status, headers, _ = get(f"{base}/dashboard?token={quote(TOKEN, safe='')}", redirect=False)
    assert status == 302 and headers["Location"] == "/dashboard"
    jar = headers["Set-Cookie"].split(";")[0]
    status, _, body = get(base + "/dashboard", {"Cookie": jar})
    assert status == 200 and b"<title>Optuna Dashboard</title>" in body

    # 16 requests at once on 8 threads: the storage's pool stays bounded
    with peak_connections(pg_url) as peak:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(get(f"{base}/api/studies/{demo.study_id}", bearer)[0]))
            for _ in range(16)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)
    assert results == [200] * 16
    assert 1 <= peak.peak <= POOL_SIZE

    rc = server.stop()
    assert rc == 0, server.output
    assert "stopped" in server.output  # serve() returned normally, after closing
    assert SECRET not in server.output and TOKEN not in server.output
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cli_dashboard_wired() -> None:
    r = run_cli("dashboard", "--help", timeout=60)
    if r.returncode != 0:
        pytest.skip(f"`hpo dashboard` is not wired into the CLI yet (hpo dashboard --help exited {r.returncode})")


@pytest.mark.postgres
def test_cli_dashboard(cli_dashboard_wired: None, pg_url: str, demo: DemoStudy) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    refused = run_cli("dashboard", "--storage", pg_url, "--host", "0.0.0.0", env=env, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: --host 0.0.0.0 exposes the dashboard, which can delete studies: set --token or HPO_DASHBOARD_TOKEN"
    )

    port = _free_port()
    exe = Path(sys.executable).parent / "hpo"
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "hpo.cli"])]
    cmd += ["dashboard", "--storage", with_password(pg_url), "--port", str(port), "--host", "127.0.0.1"]
    server = Server([*cmd, "--token", TOKEN], env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, _ = get(base + "/api/studies")
                break
            except OSError:
                if time.monotonic() > deadline or server.proc.poll() is not None:
                    pytest.fail(f"hpo dashboard did not listen on {port}:\n{server.output}")
                time.sleep(0.1)
        assert status == 401
        status, _, body = get(base + "/api/studies", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and demo.name.encode() in body
    finally:
        rc = server.stop()
    assert rc == 0, server.output
    assert f"127.0.0.1:{port}" in server.output  # it told the user where to look
    assert SECRET not in server.output and TOKEN not in server.output


# --- the real app in headless Chromium ---------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.postgres
def test_dashboard_in_browser(dashboard: tuple[Server, str], demo: DemoStudy, tmp_path: Path) -> None:
    require_chromium()
    from urllib.parse import quote

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, base = dashboard

    def body_text(driver: Any) -> str:
        return str(driver.find_element(By.TAG_NAME, "body").text)

    with chromium(tmp_path / "profile") as driver:
        driver.get(f"{base}/?token={quote(TOKEN, safe='')}")
        WebDriverWait(driver, 60).until(lambda d: demo.name in body_text(d))
        assert "token" not in driver.current_url  # the redirect dropped it from the address bar

        driver.get(f"{base}/dashboard/studies/{demo.study_id}")
        WebDriverWait(driver, 60).until(
            lambda d: (
                f"Best Trial (number={demo.best_number})" in body_text(d)
                and len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= 3
            )
        )
        assert f"{demo.name} (id={demo.study_id})" in body_text(driver)
        time.sleep(1)  # let the plots finish their transitions before the picture
        driver.save_screenshot(str(screenshot_path("dashboard.png", tmp_path)))

        assert severe_errors(driver) == []
        network = [u for u in requested_urls(driver) if u.startswith(("http:", "https:", "ws:", "wss:"))]
        assert any(u.startswith(f"{base}/api/studies/{demo.study_id}") for u in network)
        assert [u for u in network if not u.startswith(base + "/")] == []  # works offline: only our server

        driver.get(f"{base}/dashboard/studies/{demo.study_id}/trials")
        WebDriverWait(driver, 60).until(lambda d: "Trial " in body_text(d) and "FAIL" in body_text(d).upper())

    # a fresh browser without the token sees the 401 text, not the app ...
    with chromium(tmp_path / "profile-2") as driver:
        driver.get(f"{base}/dashboard")
        text = body_text(driver)
        assert text.startswith("401 Unauthorized")
        assert demo.name not in text and "Optuna" not in driver.title

        # ... and a ?token= link clicked on another site (a chat, an e-mail) gets it in: the cookie is Lax
        link = tmp_path / "link.html"
        link.write_text(f'<a id="open" href="{base}/?token={quote(TOKEN, safe="")}">dashboard</a>')
        driver.get(link.as_uri())
        driver.find_element(By.ID, "open").click()
        WebDriverWait(driver, 60).until(lambda d: demo.name in body_text(d) or "401 Unauthorized" in body_text(d))
        assert demo.name in body_text(driver)
