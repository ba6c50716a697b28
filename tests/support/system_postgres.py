"""A system PostgreSQL server for the tests (Debian's packages, not pgserver).

``initdb`` and ``pg_ctl`` of the newest ``/usr/lib/postgresql/<version>/bin`` (or
``$SYNCD_TEST_PG_BIN``) create and start a cluster in a temporary directory,
listening on a free loopback port with its Unix socket in that directory. The
server refuses to run as root, so under root it runs as the ``postgres`` system
user (present wherever Debian's ``postgresql`` package is installed), else as
``nobody``.

Roles: ``postgres`` (the bootstrap superuser, trusted on the Unix socket only), an
owner role that owns the database and runs the migrations, and the daemon's
least-privilege role, created and granted by the SQL that ``docs/reliability.md``
documents, read from that page (so the grants are tested as written). TCP
connections need a password (scram-sha-256).
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
RELIABILITY_DOC = ROOT / "docs" / "reliability.md"
PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
OWNER = ("syncd_owner", "owner-secret")
DATABASE = "syncd"
DAEMON_PASSWORD = "daemon-secret"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def server_bin() -> Path | None:
    """The newest directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    configured = os.environ.get("SYNCD_TEST_PG_BIN")
    candidates = [Path(configured)] if configured else sorted(
        PG_ROOT.glob("*/bin"), key=_version_key, reverse=True)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def missing_server() -> str | None:
    """Why no system PostgreSQL can be started here, or None."""
    if server_bin() is None:
        return (f"PostgreSQL server binaries (initdb, pg_ctl) not found under {PG_ROOT}/*/bin"
                " (Debian's postgresql package)")
    if os.geteuid() == 0 and _run_as() is None:
        return "running as root and neither the postgres nor the nobody user exists"
    return None


def _run_as() -> str | None:
    """The unprivileged user the server runs as when the tests run as root."""
    for user in (SUPERUSER, "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return user
    return None


def documented_schemas() -> set[str]:
    """The schemas the documented GRANT USAGE ON SCHEMA names."""
    _, statements = least_privilege_sql("")
    for statement in statements:
        match = re.match(r"GRANT USAGE ON SCHEMA ([\w, ]+?) TO ", statement)
        if match:
            return {name.strip() for name in match.group(1).split(",")}
    raise RuntimeError(f"no GRANT USAGE ON SCHEMA in {RELIABILITY_DOC}")


def least_privilege_sql(password: str) -> tuple[str, list[str]]:
    """The role name and the statements of the least-privilege block of
    ``docs/reliability.md``, its password placeholder filled in."""
    text = RELIABILITY_DOC.read_text()
    match = re.search(r"```sql\n(CREATE ROLE .*?)```", text, re.S)
    if match is None:
        raise RuntimeError(f"no ```sql CREATE ROLE block in {RELIABILITY_DOC}")
    statements = [s.strip() for s in match.group(1).split(";") if s.strip()]
    role = re.match(r"CREATE ROLE (\w+)", statements[0])
    if role is None or "PASSWORD '...'" not in statements[0]:
        raise RuntimeError(f"unexpected CREATE ROLE statement in {RELIABILITY_DOC}:"
                           f" {statements[0]!r}")
    statements[0] = statements[0].replace("PASSWORD '...'", f"PASSWORD '{password}'")
    return role.group(1), statements


@dataclass
class SystemPostgres:
    """One server, an owner role, the daemon's least-privilege role, databases made
    by ``create_database``."""

    base_dir: Path | None = None
    port: int = 0
    bin_dir: Path = field(default_factory=lambda: server_bin() or PG_ROOT)
    daemon_role: str = ""
    version: str = ""
    _user: str | None = field(default=None, repr=False)
    _own_dir: bool = field(default=False, repr=False)
    _started: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir

    @property
    def log_file(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "server.log"

    def _dsn(self, user: str, password: str | None, database: str) -> str:
        auth = quote(user) + (f":{quote(password)}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def owner_dsn(self, database: str = DATABASE) -> str:
        """The owner of ``database``: runs ``syncd migrate``."""
        return self._dsn(OWNER[0], OWNER[1], database)

    def daemon_dsn(self, database: str = DATABASE) -> str:
        """The daemon's least-privilege role, over TCP with its password."""
        return self._dsn(self.daemon_role, DAEMON_PASSWORD, database)

    def _cmd(self, *args: str) -> list[str]:
        if self._user is None:
            return list(args)
        return ["runuser", "-u", self._user, "--", *args]

    def _run(self, *args: str) -> None:
        result = subprocess.run(self._cmd(*args), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed (exit {result.returncode}):"
                               f"\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    def start(self) -> None:
        reason = missing_server()
        if reason:
            raise RuntimeError(reason)
        from daemon.runtime.embedded import free_port

        if self.base_dir is None:
            # Not under pytest's tmp directories: those are private to root, and the
            # server's user must reach its own data directory.
            self.base_dir = Path(tempfile.mkdtemp(prefix="syncd-system-pg-"))
            self._own_dir = True
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._user = _run_as() if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        os.chmod(self.base_dir, 0o700)
        self.port = self.port or free_port()
        initdb, pg_ctl = str(self.bin_dir / "initdb"), str(self.bin_dir / "pg_ctl")
        self._run(initdb, "-D", str(self.data_dir), "-U", SUPERUSER, "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
                  "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port}"
                   f" -c unix_socket_directories={self.socket_dir}"
                   # Test data only: no fsync, so the server's writes cost the shared
                   # disk nothing.
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                   " -c max_connections=200 -c shared_buffers=64MB"
                   # Nor keep PostgreSQL's default 1 GB of WAL between checkpoints.
                   " -c max_wal_size=96MB -c min_wal_size=32MB")
        self._run(pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                  "-w", "-t", "60", "start")
        self._started = True
        atexit.register(self.stop)  # an interrupted session still stops the server

    async def _superuser(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            f"postgresql://{SUPERUSER}@/postgres?host={quote(str(self.socket_dir))}"
            f"&port={self.port}")

    async def create_roles(self) -> None:
        """The owner role and the daemon's role as documented (granted per database by
        ``grant_daemon`` once the migrations made the schemas)."""
        conn = await self._superuser()
        try:
            self.version = str(await conn.fetchval("SHOW server_version"))
            await conn.execute(f"CREATE ROLE {OWNER[0]} LOGIN PASSWORD '{OWNER[1]}'")
            role, statements = least_privilege_sql(DAEMON_PASSWORD)
            self.daemon_role = role
            await conn.execute(statements[0])
        finally:
            await conn.close()

    async def create_database(self, name: str = DATABASE) -> str:
        """A new database owned by the owner role; returns its name."""
        conn = await self._superuser()
        try:
            await conn.execute(f"CREATE DATABASE {name} OWNER {OWNER[0]}")
        finally:
            await conn.close()
        return name

    async def grant_daemon(self, database: str = DATABASE,
                           extra_schemas: tuple[str, ...] = ()) -> None:
        """The documented grants on ``database``, run by its owner after the migrations;
        ``extra_schemas`` are added to each statement's schema list."""
        _, statements = least_privilege_sql(DAEMON_PASSWORD)
        if extra_schemas:
            extra = "".join(f", {schema}" for schema in extra_schemas)
            statements = [re.sub(r"(SCHEMA [\w, ]+?)( TO )", rf"\1{extra}\2", s)
                          for s in statements]
        conn = await asyncpg.connect(self.owner_dsn(database))
        try:
            for statement in statements[1:]:
                await conn.execute(statement)
        finally:
            await conn.close()

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._started:
            self._started = False
            try:
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                          "-w", "-t", "30", "stop")
            except RuntimeError:
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir),
                          "-m", "immediate", "-w", "stop")
        if self._own_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
