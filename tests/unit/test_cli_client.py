"""The CLI's one HTTP client: where the daemon is (IPv6 too), which token, its errors."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from daemon.cli import cli
from daemon.cli.client import DaemonClient, Unreachable, api_token, base_url
from daemon.runtime.runtime_file import RuntimeInfo, write_runtime
from daemon.runtime.settings import load_settings


def test_address_comes_from_the_runtime_file_first(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The running daemon's own address wins over the configured one."""
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    settings = load_settings(data_dir=tmp_path, http_listen="0.0.0.0:9100")
    assert base_url(settings) == "http://127.0.0.1:9100"
    write_runtime(tmp_path, RuntimeInfo(pid=os.getpid(), http="[::1]:8123", broker="b",
                                        database="postgresql://u@h/d"))
    assert base_url(settings) == "http://[::1]:8123"
    with pytest.raises(Unreachable, match="not running"):
        base_url(load_settings(data_dir=tmp_path / "none", http_listen="127.0.0.1:0"))


def test_token_comes_from_the_environment_then_the_local_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the other operator commands: SYNCD_API_TOKEN, else <data dir>/api-token."""
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    monkeypatch.delenv("SYNCD_API_TOKEN", raising=False)
    settings = load_settings(data_dir=tmp_path)
    assert api_token(settings) is None
    (tmp_path / "api-token").write_text("local-secret\n")
    assert api_token(settings) == "local-secret"
    monkeypatch.setenv("SYNCD_API_TOKEN", "from-env")
    assert api_token(settings) == "from-env"


@pytest.mark.parametrize("runtime", [None, "::1:8123", "[::1]:8123"])
def test_an_ipv6_address_gives_a_bracketed_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               runtime: str | None) -> None:
    """D7: an IPv6 host is bracketed in the URL, as the configured listen address, as
    the runtime file names it (``::1:8123`` is how the daemon wrote it before) and for
    the wildcard ``::``; every command takes its client from here."""
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    settings = load_settings(data_dir=tmp_path, http_listen="[::1]:8123")
    if runtime is not None:
        write_runtime(tmp_path, RuntimeInfo(pid=os.getpid(), http=runtime, broker="b",
                                            database="postgresql://u@h/d"))
    assert DaemonClient.from_settings(settings).base == "http://[::1]:8123"
    wildcard = load_settings(data_dir=tmp_path / "other", http_listen="[::]:8124")
    assert DaemonClient.from_settings(wildcard).base == "http://[::1]:8124"


@pytest.fixture
async def ipv6_daemon() -> AsyncIterator[TestServer]:
    """A stand-in daemon on ::1 that answers ``/api/v1/status`` to the right token."""
    async def status(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer v6-token":
            return web.json_response({"error": {"code": "unauthorized", "message": "no"}},
                                     status=401)
        return web.json_response({"state": "running", "consumer_lag": {}})

    app = web.Application()
    app.router.add_get("/api/v1/status", status)
    server = TestServer(app, host="::1")
    try:
        await server.start_server()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        yield server
    finally:
        await server.close()


@pytest.mark.parametrize("written", ["{host}:{port}", "[{host}]:{port}"])
async def test_commands_reach_a_daemon_listening_on_ipv6(ipv6_daemon: TestServer,
                                                         tmp_path: Path, written: str) -> None:
    """D7: `syncd status` reaches a daemon whose runtime file names an IPv6 address,
    bracketed (as the daemon writes it now) or not (as it wrote it before)."""
    import asyncio

    assert ipv6_daemon.port is not None
    write_runtime(tmp_path, RuntimeInfo(
        pid=os.getpid(), http=written.format(host="::1", port=ipv6_daemon.port), broker="b",
        database="postgresql://u@h/d"))
    env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": "v6-token"}
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert '"state": "running"' in result.output


def test_a_refusal_is_the_daemons_error_body() -> None:
    """The client reads the error shape back: code and message, extra fields too."""
    from daemon.http.errors import ApiError

    err = ApiError.from_answer(409, b'{"error": {"code": "ambiguous_department",'
                                    b' "message": "two", "ids": ["1", "2"]}}', "Conflict")
    assert (err.status, err.code, err.message, err.extra) == (
        409, "ambiguous_department", "two", {"ids": ["1", "2"]})
    plain = ApiError.from_answer(502, b"<html>proxy</html>", "Bad Gateway")
    assert (plain.code, plain.message) == ("bad_gateway", "Bad Gateway")
