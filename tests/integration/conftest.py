"""Integration tests against real servers on loopback: PostgreSQL and an S3-compatible server.

Where the servers are:

* ``HITL_IT_POSTGRES_URL``: a SQLAlchemy URL of a PostgreSQL role allowed to ``CREATE DATABASE``;
* ``HITL_IT_S3_ENDPOINT_URL``: an S3-compatible endpoint (any non-empty AWS credentials will do for moto).

Unset, they are read from ``.hitl/stack/stack.env``, which ``make stack`` (or ``scripts/stack.sh
services``, what CI runs) writes. When the servers cannot be reached the whole folder is skipped
with the reason, unless ``HITL_REQUIRE_INTEGRATION=1`` (CI), which turns that into a failure.

Every session creates its own databases and buckets (``hitl_it_<random>_...``) and removes them
afterwards, so the tests never touch the stack's own data. The MLflow tracking server is a real
``mlflow server`` started here on a free loopback port: tracking store on PostgreSQL, artifacts on S3.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STACK_ENV = REPO / ".hitl" / "stack" / "stack.env"
DEFAULT_POSTGRES_URL = "postgresql+psycopg2://hitl@127.0.0.1:5433/postgres"
DEFAULT_S3_ENDPOINT_URL = "http://127.0.0.1:9000"
REQUIRED = os.environ.get("HITL_REQUIRE_INTEGRATION", "") == "1"
# Session-wide AWS settings for the S3-compatible server (moto accepts any non-empty credentials).
AWS_DEFAULTS = {"AWS_ACCESS_KEY_ID": "hitl-it", "AWS_SECRET_ACCESS_KEY": "hitl-it", "AWS_DEFAULT_REGION": "us-east-1"}


def read_env_file(path: Path) -> dict[str, str]:
    """KEY='value' lines as written by scripts/stack.sh (comments and blank lines ignored)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value else [""]
        values[key.strip()] = parts[0] if parts else ""
    return values


@dataclass(frozen=True)
class Servers:
    postgres_url: str  # a maintenance database; the role may CREATE DATABASE
    s3_endpoint_url: str
    source: str  # where the settings came from, for messages

    def database_url(self, name: str) -> str:
        return sa.engine.make_url(self.postgres_url).set(database=name).render_as_string(hide_password=False)

    def describe(self) -> str:
        shown = sa.engine.make_url(self.postgres_url).render_as_string(hide_password=True)
        return f"PostgreSQL {shown}, S3 {self.s3_endpoint_url} (from {self.source})"

    def __repr__(self) -> str:  # pytest prints fixtures in failure reports: never the password
        return f"Servers({self.describe()})"


def configured_servers() -> Servers:
    stack = read_env_file(STACK_ENV)
    if os.environ.get("HITL_IT_POSTGRES_URL") or os.environ.get("HITL_IT_S3_ENDPOINT_URL"):
        source = "environment"
    elif stack:
        source = str(STACK_ENV.relative_to(REPO))
    else:
        source = "defaults"
    return Servers(
        postgres_url=os.environ.get("HITL_IT_POSTGRES_URL") or stack.get("HITL_IT_POSTGRES_URL") or DEFAULT_POSTGRES_URL,
        s3_endpoint_url=os.environ.get("HITL_IT_S3_ENDPOINT_URL") or stack.get("HITL_IT_S3_ENDPOINT_URL") or DEFAULT_S3_ENDPOINT_URL,
        source=source,
    )


def s3_client(endpoint_url: str, max_attempts: int = 3):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=3, read_timeout=10)
    )


def probe(servers: Servers) -> str | None:
    """None when both servers answer (and the role may create databases); otherwise why not."""
    from resources.review_store import engine_url

    try:
        engine = sa.create_engine(engine_url(servers.postgres_url), connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            may_create = conn.execute(sa.text("select rolcreatedb or rolsuper from pg_roles where rolname = current_user")).scalar()
        if not may_create:
            return f"the PostgreSQL role of {servers.describe()} may not CREATE DATABASE"
    except Exception as err:  # noqa: BLE001 - any failure means "not reachable", with the reason
        return f"PostgreSQL not reachable: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    try:
        s3_client(servers.s3_endpoint_url, max_attempts=1).list_buckets()
    except Exception as err:  # noqa: BLE001
        return f"S3 server not reachable at {servers.s3_endpoint_url}: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return None


_PROBED: dict[str, object] = {}


def servers_or_reason() -> tuple[Servers, str | None]:
    if "servers" not in _PROBED:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in AWS_DEFAULTS.items():
                if not os.environ.get(key):
                    patch.setenv(key, value)
            servers = configured_servers()
            _PROBED["servers"], _PROBED["reason"] = servers, probe(servers)
    return _PROBED["servers"], _PROBED["reason"]  # type: ignore[return-value]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if "servers" not in _PROBED:
        return  # no integration test was collected
    servers, reason = servers_or_reason()
    if reason is None:
        terminalreporter.write_line(f"integration tests ran against real servers: {servers.describe()}")
    elif REQUIRED:
        terminalreporter.write_line(f"integration tests FAILED: HITL_REQUIRE_INTEGRATION=1 but {reason}", red=True)
    else:
        terminalreporter.write_line(
            f"integration tests SKIPPED: {reason}. Start the servers with `make stack` (or `scripts/stack.sh services`) to run them.",
            yellow=True,
        )


@pytest.fixture(scope="session", autouse=True)
def servers() -> Servers:
    """The reachable servers; skips (or, with HITL_REQUIRE_INTEGRATION=1, fails) the folder otherwise."""
    found, reason = servers_or_reason()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"HITL_REQUIRE_INTEGRATION=1 but {reason} ({found.describe()})", pytrace=False)
        pytest.skip(f"integration servers not reachable: {reason}; start them with `make stack`")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in AWS_DEFAULTS.items():
            if not os.environ.get(key):
                patch.setenv(key, value)
        # MLflow's S3 artifact repository (client and server) reads its endpoint from here.
        patch.setenv("MLFLOW_S3_ENDPOINT_URL", found.s3_endpoint_url)
        yield found


SESSION_TAG = f"{os.getpid()}{secrets.token_hex(2)}"


@pytest.fixture(scope="session")
def make_database(servers):
    """Factory: a fresh, empty PostgreSQL database; returns its URL. All are dropped at the end."""
    from resources.review_store import engine_url

    admin = sa.create_engine(engine_url(servers.postgres_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    made: list[str] = []

    def make(purpose: str) -> str:
        name = f"hitl_it_{SESSION_TAG}_{purpose}_{len(made)}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return servers.database_url(name)

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def make_bucket(servers):
    """Factory: a fresh, empty bucket on the S3 server; returns its name. All are emptied and removed at the end."""
    client = s3_client(servers.s3_endpoint_url)
    made: list[str] = []

    def make(purpose: str) -> str:
        name = f"hitl-it-{SESSION_TAG}-{purpose}-{len(made)}".lower()
        client.create_bucket(Bucket=name)
        made.append(name)
        return name

    yield make
    for name in made:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts: str  # s3:// location the pipeline's experiment writes to
    bucket: str


@pytest.fixture(scope="session")
def mlflow_server(servers, make_database, make_bucket, tmp_path_factory):
    """A real ``mlflow server`` on loopback: tracking and registry on PostgreSQL, artifacts on S3."""
    database = make_database("mlflow")
    bucket = make_bucket("mlflow")
    port = free_port()
    log_path = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": database,  # in the environment, not on a command line
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/artifacts",
        "MLFLOW_S3_ENDPOINT_URL": servers.s3_endpoint_url,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}", pytrace=False)
            try:
                urllib.request.urlopen(f"{url}/health", timeout=3)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server not ready after 240 s:\n{log_path.read_text()[-3000:]}", pytrace=False)
                time.sleep(1)
        yield MlflowServer(url=url, artifacts=f"s3://{bucket}/artifacts", bucket=bucket)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="session")
def dagster_pg_instance(make_database, tmp_path_factory):
    """A Dagster instance on PostgreSQL built from deploy/dagster.postgres.yaml and DAGSTER_PG_* variables."""
    import dagster as dg

    url = sa.engine.make_url(make_database("dagster"))
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
        patch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
        patch.setenv("DAGSTER_PG_USER", url.username or "")
        patch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
        patch.setenv("DAGSTER_PG_DB", url.database or "")
        patch.setenv("DAGSTER_HOME", str(home))
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield instance
        finally:
            instance.dispose()
