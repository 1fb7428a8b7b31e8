"""A real PostgreSQL server for the tests of the production instance (deploy/dagster.yaml): Debian's
`postgresql` package, started once per session on loopback in a temporary folder and stopped at its end.

The `postgres` fixture skips (naming the package to install) when no server binaries exist; `.ci/run`
installs them, so in CI these tests run. Each test gets a database of its own (`pg_env`), so runs, events
and schedule state never leak from one test to the next.
"""

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from cg_dagster_tests._fixtures_dev import free_port

PG_USER = "dagster"


def server_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and postgres (Debian's layout), else None."""
    found = [
        path / "bin"
        for path in Path("/usr/lib/postgresql").glob("*")
        if path.name.isdigit() and (path / "bin" / "initdb").is_file() and (path / "bin" / "postgres").is_file()
    ]
    return max(found, key=lambda path: int(path.parent.name)) if found else None


@dataclass(frozen=True)
class PostgresServer:
    """A running server: ``host``/``port`` on loopback, superuser ``user`` with ``password`` (scram-sha-256)."""

    host: str
    port: int
    user: str
    password: str

    def connect(self, database: str = "postgres"):
        """A psycopg2 connection in autocommit mode (CREATE DATABASE cannot run in a transaction)."""
        import psycopg2

        connection = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database
        )
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> dict:
        """Create database ``name``; returns the DAGSTER_PG_* variables deploy/dagster.yaml reads for it."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": name,
        }


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run ``command`` as the `postgres` user (Debian's package
    creates it) through runuser; as anyone else, run it as is."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session: initdb in a fresh temporary folder, started with pg_ctl on
    127.0.0.1 (no Unix socket, durability off: test data only), stopped and deleted at the end."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: `apt-get install postgresql` "
            "(Debian's package; .ci/run installs it)"
        )
    root = Path(tempfile.mkdtemp(prefix="cg_postgres_"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(host="127.0.0.1", port=free_port(), user=PG_USER, password=secrets.token_hex(16))
    data, password_file = root / "data", root / "password"
    password_file.write_text(server.password)
    if os.geteuid() == 0:
        os.chown(password_file, account.pw_uid, account.pw_gid)
    password_file.chmod(0o600)

    def pg(*args: str) -> None:
        done = subprocess.run(
            _as_server_user([str(bin_dir / args[0]), *args[1:]]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"

    pg(
        "initdb",
        "-D",
        str(data),
        "-U",
        server.user,
        f"--pwfile={password_file}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    )
    options = (
        f"-h {server.host} -p {server.port} -k '' -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=200"
    )
    try:
        pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "-t", "60", "start")
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_env(postgres) -> dict:
    """The DAGSTER_PG_* variables of a fresh database for this test."""
    return postgres.create_database(f"cg_{secrets.token_hex(6)}")
