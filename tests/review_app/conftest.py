"""Fixtures for the review app's API and security tests: a store with synthetic tasks, accounts, logged-in clients."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from hitl_assets.review_app.app import create_app
from hitl_assets.review_app.security import LoginLimiter, hash_password
from hitl_assets.review_app.synthetic import seed_review_tasks
from ml.policy import ReviewSettings, load_policy, default_policy_path

SECRET = "test-secret-0123456789abcdef-review"
PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD)  # argon2 is slow on purpose: hash once per session


def make_policy(**review):
    policy = load_policy(default_policy_path())
    settings = {"batch_size": 5, "break_after_items": 1000, "break_seconds": 0, "claim_timeout_minutes": 30} | review
    return policy.model_copy(update={"review": ReviewSettings(**settings)})


class Reviewer:
    """A logged-in TestClient plus its CSRF token."""

    def __init__(self, client: TestClient, name: str):
        self.client, self.name = client, name
        page = client.get("/")
        assert page.status_code == 200, page.text
        self.csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)

    def post(self, url, **kwargs):
        headers = {"X-CSRF-Token": self.csrf} | kwargs.pop("headers", {})
        return self.client.post(url, headers=headers, **kwargs)

    def get(self, url, **kwargs):
        return self.client.get(url, **kwargs)

    def claim(self) -> list[int]:
        answer = self.post("/api/claim")
        assert answer.status_code == 200, answer.text
        return [t["id"] for t in answer.json()["tasks"] if t["status"] == "todo"]

    def decide(self, task_id: int, decision: str = "approve", **body):
        return self.post(f"/api/tasks/{task_id}/decision", json={"decision": decision, "seconds": 3.5} | body)


@pytest.fixture(name="make_policy")
def make_policy_fixture():
    """make_policy(**review settings) -> the default policy with those review settings."""
    return make_policy


@pytest.fixture
def review_env(tmp_path, review_store, object_store):
    """(make_app, seed): build the app on the temporary stores with a policy of your choice."""

    def seed(count=12, **kwargs):
        return seed_review_tasks(review_store, object_store, count, **kwargs)

    def make_app(policy=None, **kwargs):
        kwargs.setdefault("login_limiter", LoginLimiter(max_failures=5, window_s=300))
        return create_app(review_store, object_store, policy or make_policy(), SECRET, **kwargs)

    return make_app, seed


@pytest.fixture
def login(review_store):
    """login(app, name, role="reviewer") -> Reviewer (creates the account when missing)."""

    def do_login(app, name: str, role: str = "reviewer") -> Reviewer:
        if review_store.get_user(name) is None:
            review_store.add_user(name, role, _HASH)
        client = TestClient(app)
        form = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        answer = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": csrf}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        return Reviewer(client, name)

    return do_login
