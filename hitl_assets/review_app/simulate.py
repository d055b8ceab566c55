"""Simulated reviewers working the review app over HTTP: the load benchmark and the restart fault test use them.

Each simulated reviewer logs in, claims a batch, opens each item (task JSON and its composite image),
and decides it (approve, reject, or every ``correct_every``-th item a corrected mask painted on the
preview), exactly as the browser does: CSRF header, an idempotency key per decision, and a network
failure retried with the same key until the app answers. A decision counts as *acknowledged* when the
app answered 200 with its event id. ``verify`` then checks the store: every acknowledged decision
present exactly once, and no task decided twice.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
import numpy as np

from ml.imageio import encode_png

CSRF_IN_PAGE = re.compile(r'data-csrf="([^"]+)"')
CSRF_IN_FORM = re.compile(r'name="csrf_token" value="([^"]+)"')
TRANSIENT = (httpx.TransportError,)  # refused, reset, timed out: the app is (re)starting


@dataclass
class Ledger:
    """What the simulated reviewers saw: latencies per action, acknowledged decisions, errors."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    acknowledged: dict[str, tuple[int, int]] = field(default_factory=dict)  # request id -> (task id, event id)
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, action: str, seconds: float) -> None:
        with self.lock:
            self.latencies[action].append(seconds)

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def summary(self) -> dict:
        out = {}
        for action, values in sorted(self.latencies.items()):
            arr = np.asarray(values) * 1000.0
            out[action] = {
                "count": int(arr.size),
                "p50_ms": round(float(np.percentile(arr, 50)), 2) if arr.size else None,
                "p99_ms": round(float(np.percentile(arr, 99)), 2) if arr.size else None,
            }
        return out


class SimulatedReviewer:
    """One reviewer's HTTP session against the app at ``base_url``."""

    def __init__(self, base_url: str, name: str, password: str, ledger: Ledger, *, seed: int = 0,
                 correct_every: int = 10, think_s: float = 0.0, retry_for_s: float = 120.0):
        self.base, self.name, self.password, self.ledger = base_url.rstrip("/"), name, password, ledger
        self.client = httpx.Client(base_url=self.base, timeout=30.0, follow_redirects=False)
        self.rng = np.random.default_rng(seed)
        self.correct_every, self.think_s, self.retry_for_s = correct_every, think_s, retry_for_s
        self.csrf = ""
        self.decided = 0

    def close(self) -> None:
        self.client.close()

    # -- HTTP with retries ----------------------------------------------------------------------

    def _send(self, action: str, method: str, url: str, **kwargs) -> httpx.Response:
        """One request, timed; connection failures retried (same body: decisions carry a request id)."""
        deadline = time.monotonic() + self.retry_for_s
        while True:
            started = time.perf_counter()
            try:
                response = self.client.request(method, url, **kwargs)
            except TRANSIENT:
                self.ledger.error(f"{action}:connection")
                with self.ledger.lock:
                    self.ledger.retries += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            self.ledger.timed(action, time.perf_counter() - started)
            if response.status_code == 401:  # session lost (it should not be, across restarts): log in again
                self.login()
                continue
            return response

    def login(self) -> None:
        form = self._send("login_form", "GET", "/login")
        token = CSRF_IN_FORM.search(form.text).group(1)
        answer = self._send("login", "POST", "/login", data={"username": self.name, "password": self.password, "csrf_token": token})
        if answer.status_code != 303:
            raise RuntimeError(f"{self.name} could not log in: HTTP {answer.status_code}")
        page = self._send("queue_page", "GET", "/")
        self.csrf = CSRF_IN_PAGE.search(page.text).group(1)

    def post(self, action: str, url: str, **kwargs) -> httpx.Response:
        return self._send(action, "POST", url, headers={"X-CSRF-Token": self.csrf}, **kwargs)

    # -- the work --------------------------------------------------------------------------------

    def claim(self) -> list[int]:
        answer = self.post("claim", "/api/claim", json={})
        if answer.status_code != 200:
            self.ledger.error(f"claim:{answer.status_code}")
            return []
        return [t["id"] for t in answer.json()["tasks"] if t["status"] == "todo"]

    def decide(self, task_id: int) -> bool:
        item = self._send("task", "GET", f"/api/tasks/{task_id}")
        if item.status_code != 200:  # the claim expired and someone else has it
            self.ledger.error(f"task:{item.status_code}")
            return False
        payload = item.json()
        image = self._send("image", "GET", payload["images"]["composite"])
        if image.status_code != 200:
            self.ledger.error(f"image:{image.status_code}")
        if self.think_s:
            time.sleep(float(self.rng.exponential(self.think_s)))
        request_id = uuid.uuid4().hex
        self.decided += 1
        if self.correct_every and self.decided % self.correct_every == 0:
            mask = self._painted_mask(payload)
            answer = self.post(
                "correct", f"/api/tasks/{task_id}/correction",
                files={"mask": ("mask.png", mask, "image/png")},
                data={"failure_modes": "edge_halo", "seconds": f"{self.rng.uniform(3, 20):.1f}", "request_id": request_id},
            )
        else:
            decision = "approve" if self.rng.random() < 0.85 else "reject"
            answer = self.post(
                "decide", f"/api/tasks/{task_id}/decision",
                json={"decision": decision, "seconds": round(float(self.rng.uniform(2, 12)), 1), "request_id": request_id},
            )
        if answer.status_code != 200:
            self.ledger.error(f"decide:{answer.status_code}")
            return False
        body = answer.json()
        with self.ledger.lock:
            self.ledger.acknowledged[request_id] = (int(body["task_id"]), int(body["event_id"]))
        return True

    def _painted_mask(self, payload: dict) -> bytes:
        """A preview-sized mask with a rectangle painted in (what the brush would upload)."""
        width, height = payload["display"]["width"], payload["display"]["height"]
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
        return encode_png(mask, compress_level=1)

    def work(self, stop: threading.Event) -> None:
        """Claim and decide until ``stop`` is set (finishing the decision in hand)."""
        self.login()
        while not stop.is_set():
            tasks = self.claim()
            if not tasks:
                time.sleep(0.2)
                continue
            for task in tasks:
                if stop.is_set():
                    break
                self.decide(task)


class ReviewerPool:
    """``len(names)`` simulated reviewers working in threads from ``start()`` until ``stop()``."""

    def __init__(self, base_url: str, names: list[str], password: str, ledger: Ledger, **options):
        self.reviewers = [SimulatedReviewer(base_url, name, password, ledger, seed=i, **options) for i, name in enumerate(names)]
        self._stop = threading.Event()
        self.failures: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(r,), name=f"reviewer-{r.name}", daemon=True) for r in self.reviewers]

    def _run(self, reviewer: SimulatedReviewer) -> None:
        try:
            reviewer.work(self._stop)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.failures.append(exc)

    def start(self) -> "ReviewerPool":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 180.0) -> None:
        """Stop (each reviewer finishes the decision in hand, retrying it if the app is down), then close."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        for reviewer in self.reviewers:
            reviewer.close()
        if any(thread.is_alive() for thread in self._threads):
            raise RuntimeError("simulated reviewers did not stop")
        if self.failures:
            raise RuntimeError(f"{len(self.failures)} simulated reviewer(s) failed: {self.failures[0]!r}") from self.failures[0]


def run_reviewers(base_url: str, names: list[str], password: str, seconds: float, ledger: Ledger, **options) -> ReviewerPool:
    """Simulated reviewers for ``seconds``; returns the pool once all have stopped."""
    pool = ReviewerPool(base_url, names, password, ledger, **options).start()
    time.sleep(seconds)
    pool.stop()
    return pool


def verify(store, ledger: Ledger) -> dict:
    """Acknowledged decisions against the store: ``lost`` (acknowledged, not stored), ``duplicated``
    (stored more than once: extra events of one request, or a task decided twice)."""
    events = store.events()
    by_request = events.groupby("request_id").size() if len(events) else None
    lost = 0
    mismatched = 0
    for request_id, (task_id, event_id) in ledger.acknowledged.items():
        rows = events[events["request_id"] == request_id] if by_request is not None and request_id in by_request.index else None
        if rows is None or rows.empty:
            lost += 1
        elif int(rows["id"].iloc[0]) != event_id or int(rows["task_id"].iloc[0]) != task_id:
            mismatched += 1
    per_task = events.groupby("task_id").size() if len(events) else None
    duplicated = int((per_task - 1).clip(lower=0).sum()) if per_task is not None else 0
    return {
        "acknowledged": len(ledger.acknowledged),
        "stored": int(len(events)),
        "lost": lost + mismatched,
        "duplicated": duplicated,
    }


def prepare_home(home, reviewers: int, tasks: int, password: str, *, batch_size: int = 10, width: int = 640, height: int = 480) -> dict:
    """A review home for simulated reviewers: SQLite store with ``tasks`` synthetic tasks, accounts ``r00``..,
    and a policy without breaks (``policy.yaml``). Returns the paths (``db_url``, ``objects``, ``policy``, ``names``)."""
    from pathlib import Path

    import yaml

    from hitl_assets.review_app.security import hash_password
    from hitl_assets.review_app.synthetic import seed_review_tasks
    from ml.policy import default_policy_path
    from resources.object_store import ObjectStore
    from resources.review_store import ReviewStore

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{home / 'review.db'}"
    store, objects = ReviewStore(url=db_url), ObjectStore(root=str(home / "objects"))
    seed_review_tasks(store, objects, tasks, width=width, height=height, distinct_images=8)
    hashed = hash_password(password)
    names = [f"r{i:02d}" for i in range(reviewers)]
    for name in names:
        store.add_user(name, "reviewer", hashed)
    policy = yaml.safe_load(Path(default_policy_path()).read_text())
    policy["review"] = {**policy.get("review", {}), "batch_size": batch_size, "break_seconds": 0}
    (home / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    store.engine.dispose()
    return {"db_url": db_url, "objects": str(home / "objects"), "policy": str(home / "policy.yaml"), "names": names, "store": store}
