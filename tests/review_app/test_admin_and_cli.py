"""The admin page's figures, and the `hitl user add` / `hitl review` commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hitl_assets.review_app.security import verify_password
from resources.review_store import ReviewStore

REPO = Path(__file__).resolve().parents[2]


def test_admin_page_shows_queue_depth_throughput_reviewers_and_agreement(review_env, login, make_policy, review_store):
    make_app, seed = review_env
    seed(6, double_every=2)  # images 0, 2, 4 doubled: 9 tasks
    app = make_app(make_policy(batch_size=3))
    rita, sam, boss = login(app, "rita"), login(app, "sam"), login(app, "boss", role="admin")
    ritas, sams = rita.claim(), sam.claim()
    tasks = review_store.tasks().set_index("id")
    for task in ritas:
        assert rita.decide(task, "approve", seconds=4).status_code == 200
    shared = sorted(set(tasks.loc[ritas, "image_id"]) & set(tasks.loc[sams, "image_id"]))
    assert shared  # a double-reviewed image went to both
    for task in sams:
        # sam disagrees with rita on the first image they both reviewed, agrees on the rest
        decision = "reject" if tasks.loc[task, "image_id"] == shared[0] else "approve"
        assert sam.decide(task, decision, seconds=10).status_code == 200
    stats = boss.get("/api/admin/stats").json()
    assert stats["queue"] == {"open": 3, "claimed": 0, "decided": 6, "closed": 0}
    assert stats["throughput"]["last_hour"] == 6 and sum(h["decisions"] for h in stats["throughput"]["per_hour"]) == 6
    people = {r["reviewer"]: r for r in stats["reviewers"]}
    assert people["rita"]["decisions"] == 3 and people["rita"]["mean_seconds"] == 4.0
    assert people["sam"]["decisions"] == 3 and people["sam"]["median_seconds"] == 10.0
    assert stats["agreement"]["pairs"] == len(shared)
    assert stats["agreement"]["agreed"] == len(shared) - 1
    page = boss.get("/admin").text
    assert "queue depth" in page and "rita" in page and "sam" in page and "agreement on" in page
    assert 'href="/admin"' in boss.get("/").text and 'href="/admin"' not in rita.get("/").text


def run_cli(args, home, stdin=""):
    """``hitl ARGS`` in-process (click's runner), on stores under ``home``; returns (exit code, output)."""
    from click.testing import CliRunner

    from hitl_assets.cli import main

    env = {
        "HITL_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
        "HITL_REVIEW_DB_URL": f"sqlite:///{home / 'review.db'}", "HITL_OBJECT_ROOT": str(home / "objects"),
    }
    result = CliRunner().invoke(main, args, input=stdin, env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize("role", ["reviewer", "admin"])
def test_user_add_reads_the_password_from_stdin_and_stores_only_a_hash(tmp_path, role):
    code, output = run_cli(["user", "add", "alice", "--role", role], tmp_path, "s3cret-password\n")
    assert code == 0, output
    assert "s3cret-password" not in output
    account = ReviewStore(url=f"sqlite:///{tmp_path / 'review.db'}").get_user("alice")
    assert account.role == role and account.password_hash.startswith("$argon2id$")
    assert verify_password(account.password_hash, "s3cret-password")
    code, output = run_cli(["user", "add", "alice", "--role", role], tmp_path, "another-password\n")
    assert code != 0 and "exists" in output
    code, output = run_cli(["user", "add", "bob"], tmp_path, "short\n")
    assert code != 0 and "8 characters" in output
    code, _ = run_cli(["user", "add", "../bob"], tmp_path, "long-enough-password\n")
    assert code != 0
    code, output = run_cli(["user", "list"], tmp_path)
    assert code == 0 and f"alice\t{role}" in output and "bob" not in output


def test_hitl_review_is_registered(tmp_path):
    code, output = run_cli(["review", "--help"], tmp_path)
    assert code == 0 and "--host" in output and "--port" in output
