"""Run the review app in a child process on loopback (browser tests, fault tests, benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(home: Path, secret: str, **extra: str) -> dict:
    """The environment of an embedded app on ``home`` (SQLite review store, local object store)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "AWS_"))}
    env.update({
        "HITL_HOME": str(home),
        "HITL_REVIEW_DB_URL": f"sqlite:///{Path(home) / 'review.db'}",
        "HITL_OBJECT_ROOT": str(Path(home) / "objects"),
        "HITL_REVIEW_SECRET": secret,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    })
    env.update(extra)
    return env


def start_app(env: dict, port: int, log_path: Path, timeout_s: float = 90.0, *, cli: bool = False) -> subprocess.Popen:
    """The app on 127.0.0.1:port in a child process; returns once it answers ``/healthz``.

    ``cli``: run it as ``hitl review`` (what users run); else ``uvicorn --factory
    hitl_assets.review_app.app:app_from_env``.
    """
    log = open(log_path, "ab")
    if cli:
        command = [sys.executable, "-c", "from hitl_assets.cli import main; main()", "review", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [sys.executable, "-m", "uvicorn", "--factory", "hitl_assets.review_app.app:app_from_env",
                   "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the review app exited with {process.returncode}: {Path(log_path).read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the review app did not answer within {timeout_s:.0f} s: {Path(log_path).read_text()[-2000:]}")


class ThreadedServer:
    """The app served by uvicorn on 127.0.0.1:port in a background thread of this process (browser tests):
    no second interpreter to start, the same server as ``hitl review``."""

    def __init__(self, app, port: int | None = None):
        import threading

        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name=f"review-app-{self.port}", daemon=True)

    def __enter__(self) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the review app did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
