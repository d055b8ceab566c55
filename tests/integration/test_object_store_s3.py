"""The object store on a real S3-compatible server: multipart uploads, listing, the inbox sensor, retries."""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ConnectionClosedError

from hitl_assets.sensors import folder_signature, inbox_sensor
from resources.object_store import ObjectStore

pytestmark = pytest.mark.integration

MB = 1024 * 1024


@pytest.fixture
def s3_store(servers, make_bucket) -> ObjectStore:
    return ObjectStore(bucket=make_bucket("objects"), endpoint_url=servers.s3_endpoint_url, region_name="us-east-1")


def etag(store: ObjectStore, key: str) -> str:
    return store._s3().head_object(Bucket=store.bucket, Key=store._s3_key(key))["ETag"].strip('"')


def test_large_objects_are_uploaded_in_parts(s3_store, tmp_path):
    data = os.urandom(9 * MB + 123)
    s3_store.put_bytes("big/blob.bin", data, "application/octet-stream")
    assert etag(s3_store, "big/blob.bin").endswith("-2")  # S3's multipart ETag: <md5 of md5s>-<parts>
    assert s3_store.get_bytes("big/blob.bin") == data
    head = s3_store._s3().head_object(Bucket=s3_store.bucket, Key="big/blob.bin")
    assert head["ContentType"] == "application/octet-stream" and head["ContentLength"] == len(data)

    path = tmp_path / "file.bin"
    path.write_bytes(os.urandom(17 * MB))  # streamed from disk: 8 + 8 + 1 MB
    s3_store.put_file("big/file.bin", path)
    assert etag(s3_store, "big/file.bin").endswith("-3")
    assert s3_store.get_bytes("big/file.bin") == path.read_bytes()

    s3_store.put_bytes("small/x.bin", b"x" * 1000)
    assert "-" not in etag(s3_store, "small/x.bin")  # one PUT below the threshold


def test_listing_is_by_path_not_by_string_prefix(s3_store):
    for key in ["inbox/b1/a.png", "inbox/b1/sub/c.png", "inbox/b10/d.png", "inbox/.staging/e.png", "published/b1/x.jpg", "published/b10/y.jpg"]:
        s3_store.put_bytes(key, b"data")
    client = s3_store._s3()
    client.put_object(Bucket=s3_store.bucket, Key="inbox/b2/", Body=b"")  # a console's "folder"
    client.put_object(Bucket=s3_store.bucket, Key="inbox/b1//odd.png", Body=b"?")  # not addressable by a key

    assert [e.key for e in s3_store.list("inbox/b1/")] == ["inbox/b1/a.png", "inbox/b1/sub/c.png"]
    assert [e.key for e in s3_store.list("inbox/b1")] == ["inbox/b1/a.png", "inbox/b1/sub/c.png"]
    assert [e.key for e in s3_store.list("published/b1/")] == ["published/b1/x.jpg"]
    assert [e.key for e in s3_store.list("inbox/b1/a.png")] == ["inbox/b1/a.png"]
    assert s3_store.list_folders("inbox") == ["b1", "b10", "b2"]
    assert s3_store.list("nothing/") == []
    assert {e.key for e in s3_store.list("")} >= {"inbox/b1/a.png", "published/b10/y.jpg"}
    assert all(e.size == 4 and e.modified > 0 for e in s3_store.list("published/"))


def test_exists_many_asks_in_parallel_and_answers_in_order(s3_store):
    import threading

    keys = [f"outputs/{i:03d}/v1/mask.png" for i in range(40)]
    for key in keys[::3]:
        s3_store.put_bytes(key, b"m", "image/png")
    askers = set()
    client = s3_store._s3()
    client.meta.events.register("before-call.s3.HeadObject", lambda **_: askers.add(threading.current_thread().name))
    assert s3_store.exists_many(keys) == [i % 3 == 0 for i in range(40)]
    assert len(askers) > 1  # HEAD requests from several threads, not one after another


def test_a_prefix_keeps_tenants_apart(servers, s3_store):
    tenant = ObjectStore(bucket=s3_store.bucket, prefix="tenant-a", endpoint_url=servers.s3_endpoint_url)
    other = ObjectStore(bucket=s3_store.bucket, prefix="tenant-ab", endpoint_url=servers.s3_endpoint_url)
    tenant.put_bytes("inbox/b1/a.png", b"a")
    other.put_bytes("inbox/b9/z.png", b"z")
    assert [e.key for e in tenant.list("")] == ["inbox/b1/a.png"]
    assert tenant.list_folders("inbox") == ["b1"]
    assert s3_store.exists("tenant-a/inbox/b1/a.png") and tenant.exists("inbox/b1/a.png")
    assert tenant.describe() == f"s3://{s3_store.bucket}/tenant-a (endpoint {servers.s3_endpoint_url})"
    with pytest.raises(FileNotFoundError, match="inbox/none.png"):
        tenant.get_bytes("inbox/none.png")
    tenant.delete("inbox/b1/a.png")
    assert not tenant.exists("inbox/b1/a.png")


def test_inbox_sensor_finds_finished_folders_on_s3(s3_store):
    s3_store.put_bytes("inbox/b1/a.png", b"aa")
    s3_store.put_bytes("inbox/b1/catalog.csv", b"file,sku,category\n")
    s3_store.put_bytes("inbox/b10/c.png", b"ccc")
    s3_store.put_bytes("inbox/.staging/d.png", b"d")
    assert folder_signature(s3_store, "b1").startswith("2:")  # b10's file is not b1's
    with dg.instance_for_test() as instance:

        def tick(cursor):
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"object_store": s3_store}) as context:
                return inbox_sensor(context)

        first = tick(None)
        assert not first.run_requests
        assert set(json.loads(first.cursor)["pending"]) == {"b1", "b10"}
        second = tick(first.cursor)
        assert sorted(r.partition_key for r in second.run_requests) == ["b1", "b10"]
        assert second.dynamic_partitions_requests[0].partition_keys == ["b1", "b10"]


class _Body:
    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_):
        yield self._data


def _s3_error(status: int, code: str) -> bytes:
    return f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>injected by the test</Message></Error>".encode()


def inject_failures(store: ObjectStore, operation: str, failures: list) -> dict:
    """Answer the next requests of ``operation`` with the given failures, before they reach the server.

    Registered on ``before-send``, inside botocore's retry loop: the retries are botocore's own.
    Each failure is an HTTP status (answered with an S3 error document) or an exception to raise.
    """
    seen = {"attempts": 0}
    pending = list(failures)

    def handler(request, **_):
        seen["attempts"] += 1
        if not pending:
            return None
        failure = pending.pop(0)
        if isinstance(failure, BaseException):
            raise failure
        code = {500: "InternalError", 503: "SlowDown"}.get(failure, "InternalError")
        return AWSResponse(request.url, failure, {"Content-Type": "application/xml"}, _Body(_s3_error(failure, code)))

    store._s3().meta.events.register(f"before-send.s3.{operation}", handler)
    return seen


def test_transient_errors_are_retried_with_backoff(s3_store):
    seen = inject_failures(s3_store, "PutObject", [500, 503, ConnectionClosedError(endpoint_url="http://injected")])
    s3_store.put_bytes("retry/a.bin", b"payload")
    assert seen["attempts"] == 4  # three failures, then the real request
    seen = inject_failures(s3_store, "GetObject", [503, 500])
    assert s3_store.get_bytes("retry/a.bin") == b"payload"
    assert seen["attempts"] == 3
    seen = inject_failures(s3_store, "ListObjectsV2", [500])
    assert [e.key for e in s3_store.list("retry/")] == ["retry/a.bin"]
    assert seen["attempts"] == 2


def test_a_failed_part_is_retried_and_the_upload_completes(s3_store):
    seen = inject_failures(s3_store, "UploadPart", [503, 500])
    data = os.urandom(8 * MB + 1)
    s3_store.put_bytes("retry/big.bin", data)
    assert seen["attempts"] == 4  # two parts, two of the attempts failed
    assert etag(s3_store, "retry/big.bin").endswith("-2")
    assert s3_store.get_bytes("retry/big.bin") == data


def test_retries_give_up_after_max_attempts(servers, s3_store):
    store = ObjectStore(bucket=s3_store.bucket, endpoint_url=servers.s3_endpoint_url, max_attempts=2)
    seen = inject_failures(store, "PutObject", [500, 500, 500])
    with pytest.raises(ClientError, match="InternalError"):
        store.put_bytes("retry/never.bin", b"x")
    assert seen["attempts"] == 2
    assert not store.exists("retry/never.bin")


def test_a_body_cut_off_mid_read_is_fetched_again(s3_store, monkeypatch):
    from botocore.exceptions import ResponseStreamingError
    from botocore.response import StreamingBody

    s3_store.put_bytes("retry/body.bin", b"complete body")
    real_read = StreamingBody.read
    cuts = {"left": 2}

    def flaky_read(self, *args, **kwargs):
        if cuts["left"]:
            cuts["left"] -= 1
            raise ResponseStreamingError(error="connection reset mid-body (injected)")
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(StreamingBody, "read", flaky_read)
    assert s3_store.get_bytes("retry/body.bin") == b"complete body"
    assert cuts["left"] == 0
