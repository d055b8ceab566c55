"""Accounts, sessions, CSRF, access control, rate limiting and path traversal on every route of the review app."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from hitl_assets.review_app.security import LoginLimiter, Sessions, hash_password, verify_password

PASSWORD = "correct horse battery"  # the accounts of the login fixture (conftest)

# Every route, with a real task id filled in by the tests (``{id}``).
PAGES = ["/", "/tasks/{id}", "/admin"]
API_GET = ["/api/me", "/api/queue", "/api/tasks/{id}", "/api/admin/stats"]
IMAGES = ["/img/{id}/original", "/img/{id}/composite", "/img/{id}/mask", "/img/{id}/corrected", "/static/item.js", "/static/app.css"]
API_POST = ["/api/claim", "/api/tasks/{id}/decision", "/api/tasks/{id}/correction", "/logout"]


def test_passwords_are_argon2_hashed_and_verified():
    hashed = hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert verify_password(hashed, PASSWORD)
    assert not verify_password(hashed, PASSWORD + "x")
    assert not verify_password(None, PASSWORD)  # unknown user: same work, always false
    assert not verify_password("not-a-hash", PASSWORD)
    with pytest.raises(ValueError):
        hash_password("short")


def test_anonymous_requests_get_401_or_the_login_page_everywhere(review_env, login):
    make_app, seed = review_env
    seed(4)
    app = make_app()
    rita = login(app, "rita")
    task = rita.claim()[0]
    anonymous = TestClient(app)
    for path in PAGES:
        answer = anonymous.get(path.format(id=task), follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), path
    for path in API_GET + IMAGES:
        answer = anonymous.get(path.format(id=task), follow_redirects=False)
        assert answer.status_code == 401, (path, answer.status_code)
    for path in API_POST:
        answer = anonymous.post(path.format(id=task), json={"decision": "approve"}, follow_redirects=False)
        assert answer.status_code == 401, (path, answer.status_code)
    # A forged or tampered cookie is anonymous too.
    anonymous.cookies.set("hitl_session", rita.client.cookies["hitl_session"][:-3] + "abc")
    assert anonymous.get("/api/me").status_code == 401
    other_secret = Sessions("another-secret-0123456789abcdef")
    anonymous.cookies.set("hitl_session", other_secret.issue("rita")[0])
    assert anonymous.get("/api/me").status_code == 401
    # The logged-in reviewer gets them.
    assert rita.get(f"/img/{task}/original").status_code == 200
    assert rita.get("/static/item.js").status_code == 200


def test_session_cookie_flags_and_secure_over_https(review_env, review_store):
    make_app, seed = review_env
    review_store.add_user("rita", "reviewer", hash_password(PASSWORD))

    def log_in(client):
        form = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        return client.post("/login", data={"username": "rita", "password": PASSWORD, "csrf_token": csrf}, follow_redirects=False)

    answer = log_in(TestClient(make_app()))
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "hitl_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback
    secure = log_in(TestClient(make_app(), base_url="https://review.example"))
    assert "Secure" in secure.headers["set-cookie"] and "HttpOnly" in secure.headers["set-cookie"]
    # Defensive headers on every answer.
    headers = TestClient(make_app()).get("/login").headers
    assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]


def test_login_needs_its_csrf_token_and_failed_logins_are_rate_limited(review_env, review_store):
    make_app, _seed = review_env
    review_store.add_user("rita", "reviewer", hash_password(PASSWORD))
    app = make_app(login_limiter=LoginLimiter(max_failures=3, window_s=600))
    client = TestClient(app)
    # No CSRF token on the login form: refused even with the right password.
    assert client.post("/login", data={"username": "rita", "password": PASSWORD}, follow_redirects=False).status_code == 403

    def attempt(password):
        form = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        return client.post("/login", data={"username": "rita", "password": password, "csrf_token": csrf}, follow_redirects=False)

    for _ in range(3):
        wrong = attempt("wrong password!")
        assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
        assert "hitl_session" not in wrong.headers.get("set-cookie", "")
    refused = attempt(PASSWORD)  # the right password, but too many failures just now
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "hitl_session" not in refused.headers.get("set-cookie", "")
    # An unknown user name fails the same way (no user enumeration).
    other = TestClient(make_app())
    form = other.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    assert other.post("/login", data={"username": "nobody", "password": PASSWORD, "csrf_token": csrf}, follow_redirects=False).status_code == 401


def test_limiter_window_expires():
    now = [0.0]
    limiter = LoginLimiter(max_failures=2, window_s=60, clock=lambda: now[0])
    limiter.failed("user:a")
    limiter.failed("user:a")
    assert limiter.retry_after("user:a") > 0
    now[0] = 61.0
    assert limiter.retry_after("user:a") == 0


def test_every_state_changing_request_needs_the_csrf_token(review_env, login):
    make_app, seed = review_env
    seed(4)
    app = make_app()
    rita = login(app, "rita")
    task = rita.claim()[0]
    for path in API_POST:
        for headers in ({}, {"X-CSRF-Token": "wrong-token-value"}):
            answer = rita.client.post(path.format(id=task), json={"decision": "approve"}, headers=headers, follow_redirects=False)
            assert answer.status_code == 403, (path, headers, answer.status_code)
    # A form post carries it as a field (the logout button).
    out = rita.client.post("/logout", data={"csrf_token": rita.csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"


def test_csrf_refusals_change_nothing(review_env, login, review_store):
    make_app, seed = review_env
    seed(4)
    rita = login(make_app(), "rita")
    task = rita.claim()[0]
    rita.client.post(f"/api/tasks/{task}/decision", json={"decision": "approve"})
    assert review_store.events().empty
    assert review_store.get_task(task).status == "claimed"


def test_a_reviewer_sees_and_decides_only_their_own_tasks(review_env, login, review_store):
    make_app, seed = review_env
    seed(12)
    app = make_app()
    rita, sam = login(app, "rita"), login(app, "sam")
    ritas = rita.claim()
    sams = sam.claim()
    assert ritas and not set(ritas) & set(sams)
    queue = sam.get("/api/queue").json()
    assert {t["id"] for t in queue["tasks"]} == set(sams)
    theirs = ritas[0]
    for path in ("/tasks/{id}", "/api/tasks/{id}", "/img/{id}/original", "/img/{id}/mask"):
        assert sam.get(path.format(id=theirs)).status_code == 404, path
    assert sam.decide(theirs).status_code == 404
    open_task = int(review_store.tasks(status="open")["id"].iloc[0])  # nobody's yet
    assert sam.get(f"/api/tasks/{open_task}").status_code == 404
    assert sam.get("/api/tasks/999999").status_code == 404
    assert review_store.events().empty
    # Reviewers do not see the admin page.
    assert sam.get("/admin").status_code == 403
    assert sam.get("/api/admin/stats").status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/tasks/..%2F..%2Fetc%2Fpasswd", "/api/tasks/..%2F1", "/api/tasks/1%2F..%2F2", "/img/1/..%2F..%2Fetc%2Fpasswd",
        "/img/..%2F1/original", "/img/1/original%2F..%2F..%2Fsecret", "/static/..%2F..%2Fapp.py", "/static/..%2Fapp.py",
        "/static/%2E%2E%2Fsecurity.py", "/static/.hidden.js", "/static/app.py", "/img/-1/original", "/api/tasks/99999999999999999999999",
        "/img/1/%2E%2E", "/static/%2E%2E", "/tasks/1%00", "/img/1/original%00.png",
    ],
)
def test_path_traversal_is_refused(review_env, login, path):
    make_app, seed = review_env
    seed(2)
    rita = login(make_app(), "rita")
    rita.claim()
    answer = rita.get(path)
    assert answer.status_code in (400, 404), (path, answer.status_code)
    assert b"import " not in answer.content and b"root:" not in answer.content


def test_traversal_in_a_stored_key_is_not_served(review_env, login, review_store):
    """A task whose stored key points outside the object store (tampered database) gets a 404, not the file."""
    make_app, seed = review_env
    seed(2)
    rita = login(make_app(), "rita")
    task = rita.claim()[0]
    import sqlalchemy as sa

    from resources.review_store import ReviewTask

    with review_store.engine.begin() as conn:
        conn.execute(sa.update(ReviewTask).where(ReviewTask.id == task).values(image_key="../../../etc/passwd", composite_key="/etc/passwd"))
    assert rita.get(f"/img/{task}/original").status_code == 404
    assert rita.get(f"/img/{task}/composite").status_code == 404


def test_login_redirect_never_leaves_the_site(review_env, review_store):
    make_app, _seed = review_env
    review_store.add_user("rita", "reviewer", hash_password(PASSWORD))
    client = TestClient(make_app())
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        form = client.get("/login", params={"next": target})
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        answer = client.post("/login", data={"username": "rita", "password": PASSWORD, "csrf_token": csrf, "next": target}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/", target
