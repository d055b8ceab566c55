"""The review app is killed (SIGKILL) and restarted while 20 simulated reviewers work over HTTP.

Every decision the app acknowledged must be in the store exactly once; reviewers retry what got no
answer under the same idempotency key, so nothing is recorded twice either. Sessions survive the
restart (the signing key is the same), so nobody has to log in again.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from hitl_assets.review_app.process import app_env, free_port, start_app
from hitl_assets.review_app.simulate import Ledger, ReviewerPool, prepare_home, verify

pytestmark = pytest.mark.faults

PASSWORD = "simulated-reviewer-password"
SECRET = "fault-test-secret-0123456789abcdef"


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_review_app_killed_and_restarted_under_load(tmp_path, fault_report):
    home = tmp_path / "home"
    setup = prepare_home(home, reviewers=20, tasks=3000, password=PASSWORD, batch_size=5, width=320, height=240)
    env = app_env(home, SECRET, HITL_POLICY=setup["policy"])
    port = free_port()
    log = tmp_path / "app.log"
    process = start_app(env, port, log, cli=True)  # `hitl review`, as users run it
    ledger = Ledger()
    pool = ReviewerPool(f"http://127.0.0.1:{port}", setup["names"], PASSWORD, ledger, correct_every=7).start()
    restarted = None
    try:
        wait_for(lambda: len(ledger.acknowledged) >= 40, 90, "decisions before the kill")
        before_kill = len(ledger.acknowledged)
        os.kill(process.pid, signal.SIGKILL)  # mid-request for most of the 20 reviewers
        process.wait(timeout=10)
        restarted = start_app(env, port, log, cli=True)
        wait_for(lambda: len(ledger.acknowledged) >= before_kill + 40, 90, "decisions after the restart")
    finally:
        pool.stop()
        for proc in (process, restarted):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)

    figures = verify(setup["store"], ledger)
    survived = figures["lost"] == 0 and figures["duplicated"] == 0 and ledger.retries > 0
    fault_report("review_app_restarted_under_load", survived=survived, lost=figures["lost"], duplicated=figures["duplicated"])
    assert ledger.retries > 0, "the kill should have cut some requests off"  # the fault really happened
    assert figures["acknowledged"] >= 80
    assert figures["lost"] == 0, figures
    assert figures["duplicated"] == 0, figures
    # Nothing unacknowledged was stored behind the reviewers' backs either: every stored event is one they were told of.
    assert figures["stored"] == figures["acknowledged"], figures
    assert not {k: v for k, v in ledger.errors.items() if not k.endswith(":connection")}, dict(ledger.errors)
