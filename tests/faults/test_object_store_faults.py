"""Fault: the object store (S3) fails transiently, then persistently.

A real S3-compatible server (moto's, in a thread) sits behind a fault-injecting HTTP proxy that
answers chosen requests with ``503 SlowDown``, as S3 does when it throttles. The product's
``ObjectStore`` talks to the proxy through boto3 with its production retry configuration
(botocore ``standard`` mode: exponential backoff with jitter). Transient failures are retried and
the batch completes with nothing lost or doubled; a persistent failure ends the run with a clear
message after ``max_attempts`` tries, and what the run had written is removed (no partial outputs).
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import dagster as dg
import pytest

from hitl_assets.assets.ingest import raw_images
from resources import ObjectStore, ParquetIOManager

pytestmark = pytest.mark.faults

SLOW_DOWN = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


class FaultProxy:
    """Forwards HTTP to ``upstream``; ``policy(method, path, attempt)`` returning True answers 503 instead.

    ``attempt`` counts how often the same (method, path) was seen, from 1. Every request is logged
    as (time, method, path, attempt, injected).
    """

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.policy = lambda method, path, attempt: False
        self.seen: dict[tuple[str, str], int] = {}
        self.log: list[tuple[float, str, str, int, bool]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Content-Length"):
                    return self.rfile.read(int(self.headers["Content-Length"]))
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return b""

            def _handle(self):
                body = self._body()
                if self.headers.get("Expect", "").lower() == "100-continue":
                    pass  # BaseHTTPRequestHandler already answered 100 Continue
                key = (self.command, self.path)
                with proxy.lock:
                    attempt = proxy.seen.get(key, 0) + 1
                    proxy.seen[key] = attempt
                    inject = proxy.policy(self.command, self.path, attempt)
                    proxy.log.append((time.monotonic(), self.command, self.path, attempt, inject))
                if inject:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOW_DOWN)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "expect", "connection")}
                if self.command not in ("GET", "HEAD", "DELETE") or body:
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def injected(self) -> list[tuple[float, str, str, int, bool]]:
        return [row for row in self.log if row[4]]


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "faults", "AWS_SECRET_ACCESS_KEY": "faults", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = FaultProxy((host, port))
    proxy.thread.start()
    direct = boto3.session.Session().client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
    bucket = f"faults-{uuid.uuid4().hex[:12]}"  # moto's backend is process-wide: a fresh bucket per test
    direct.create_bucket(Bucket=bucket)
    yield proxy, direct, bucket
    proxy.server.shutdown()
    server.stop()


def keys(direct, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in direct.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def png(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def run_raw_images(store: ObjectStore, hitl_resources: dict, instance, batch: str):
    resources = {**hitl_resources, "object_store": store, "io_manager": ParquetIOManager(object_store=store)}
    instance.add_dynamic_partitions("batches", [batch])
    return dg.materialize([raw_images], partition_key=batch, resources=resources, instance=instance, raise_on_error=False)


def test_object_store_transient_failures_are_retried_with_backoff(s3, hitl_resources, instance, fault_report):
    proxy, direct, bucket = s3
    store = ObjectStore(bucket=bucket, endpoint_url=proxy.url, region_name="us-east-1", max_attempts=5)
    files = {f"inbox/t1/item-{i}.png": png(i) for i in range(6)}
    files["inbox/t1/copy-of-0.png"] = files["inbox/t1/item-0.png"]
    files["inbox/t1/broken.png"] = b"<html>502</html>"
    for key, data in files.items():
        direct.put_object(Bucket=bucket, Key=key, Body=data)

    # Every third distinct request fails its first two attempts with 503 SlowDown (reads, writes, listings alike).
    distinct: dict[tuple[str, str], int] = {}

    def policy(method, path, attempt):
        index = distinct.setdefault((method, path), len(distinct))
        return index % 3 == 0 and attempt <= 2

    proxy.policy = policy
    result = run_raw_images(store, hitl_resources, instance, "t1")
    injected = proxy.injected()
    retried = [(m, p) for _, m, p, attempt, inj in proxy.log if not inj and attempt == 3]
    # Backoff: the gap between a failed attempt and its retry (botocore standard mode: random(0, 2^n) seconds, jittered).
    gaps = []
    for t, method, path, attempt, inj in proxy.log:
        if attempt > 1:
            before = [u for u, m, p, a, _ in proxy.log if (m, p) == (method, path) and a == attempt - 1]
            gaps.append(t - before[0])
    originals = keys(direct, bucket, "originals/")
    raw = None
    if result.success:
        from resources.tables import read_table

        raw = read_table(store, "raw_images", "t1")
    accepted = raw[raw["status"] == "accepted"] if raw is not None else None
    lost = 7 - (len(accepted) + int((accepted["also_named"] != "").sum())) if accepted is not None else 7
    duplicated = (len(originals) - len(set(originals))) + (int(accepted["image_id"].duplicated().sum()) if accepted is not None else 0)
    survived = result.success and len(injected) >= 6 and len(retried) >= 3 and lost == 0 and duplicated == 0 and len(originals) == 6
    fault_report("object_store_transient_failures", survived=survived, lost=lost, duplicated=duplicated)
    assert result.success
    assert len(injected) >= 6 and len(retried) >= 3  # failures really happened and were retried to success
    assert sum(gaps) / len(gaps) > 0.05  # retries waited (jittered exponential backoff), not hammered
    assert len(originals) == 6 and lost == 0 and duplicated == 0
    assert raw.set_index("file").loc["broken.png", "reason"] == "not_an_image"


def test_object_store_persistent_failure_fails_clearly_with_no_partial_outputs(s3, hitl_resources, instance, fault_report):
    proxy, direct, bucket = s3
    store = ObjectStore(bucket=bucket, endpoint_url=proxy.url, region_name="us-east-1", max_attempts=3)
    for i in range(5):
        direct.put_object(Bucket=bucket, Key=f"inbox/p1/item-{i}.png", Body=png(10 + i))
    direct.put_object(Bucket=bucket, Key="inbox/p1/empty.png", Body=b"")
    # Writes of originals work twice, then the store refuses every write (an outage that outlasts the retries).
    writes = {"ok": 0}

    def policy(method, path, attempt):
        if method != "PUT" or "/originals/" not in path:
            return False
        if attempt == 1 and writes["ok"] < 2:
            writes["ok"] += 1
            return False
        return True

    proxy.policy = policy
    result = run_raw_images(store, hitl_resources, instance, "p1")
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    message = failure.step_failure_data.error.message if failure else ""
    attempts_on_failed_key = max(a for _, m, p, a, _ in proxy.log if m == "PUT" and "/originals/" in p)
    leftovers = keys(direct, bucket, "originals/") + keys(direct, bucket, "quarantine/") + keys(direct, bucket, "tables/")
    materialized = instance.get_latest_materialization_event(dg.AssetKey("raw_images"))
    lost = len(keys(direct, bucket, "inbox/p1/")) - 6  # the supplier's files themselves are untouched
    survived = (not result.success) and "object store failed" in message and not leftovers and materialized is None and lost == 0
    fault_report("object_store_persistent_failure", survived=survived, lost=abs(lost), duplicated=0)
    assert not result.success
    assert "object store failed" in message and "SlowDown" in message and "re-run" in message, message
    assert attempts_on_failed_key == 3  # max_attempts tries, then the clear failure
    assert leftovers == [] and materialized is None and lost == 0

    # The store is back: re-running the failed partition completes.
    proxy.policy = lambda method, path, attempt: False
    again = run_raw_images(store, hitl_resources, instance, "p1")
    assert again.success and len(keys(direct, bucket, "originals/")) == 5
