"""Security of the pipeline side (the review app's routes are tested in tests/review_app/test_security.py).

* path traversal: object keys, batch names, published file names and symbolic links never leave the store;
* nothing user-supplied is unpickled or executed: a static scan of the product's code, and a hostile
  pickle fed to the model loader;
* secrets come only from the environment and never reach logs, Dagster events or metadata;
* ``bandit`` finds no medium- or high-severity issue that is not explained inline (``# nosec BXXX: why``).
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from hitl_assets.assets.publish import publish_key
from hitl_assets.partitions import is_valid_batch_name
from resources.object_store import InvalidKeyError, ObjectStore, OutsideStoreError

REPO = Path(__file__).resolve().parents[2]
PRODUCT = [REPO / "hitl_assets", REPO / "ml", REPO / "resources"]

TRAVERSAL_KEYS = [
    "../outside.txt", "a/../../outside.txt", "/etc/passwd", "inbox/b1/../../../etc/passwd", "..", ".", "a/./b",
    "a\\..\\..\\outside.txt", "inbox/\x00evil", "",
]


@pytest.mark.parametrize("key", TRAVERSAL_KEYS, ids=repr)
def test_object_keys_that_escape_the_store_are_refused(tmp_path, key):
    store = ObjectStore(root=str(tmp_path / "objects"))
    for operation in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key), lambda: store.exists(key), lambda: store.delete(key)):
        with pytest.raises(InvalidKeyError):
            operation()
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize("key", ["%2e%2e/%2e%2e/outside.txt", "..%2f..%2foutside.txt", "%2fetc%2fpasswd", "\u2024\u2024/outside.txt"], ids=repr)
def test_encoded_traversal_is_a_plain_name_inside_the_store(tmp_path, key):
    store = ObjectStore(root=str(tmp_path / "objects"))
    store.put_bytes(key, b"x")  # keys are never URL-decoded: an encoded '..' is just a strange file name
    written = [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
    assert len(written) == 1 and (tmp_path / "objects") in written[0].resolve().parents
    assert not (tmp_path / "outside.txt").exists()


def test_a_symbolic_link_out_of_the_store_is_never_followed(tmp_path):
    store = ObjectStore(root=str(tmp_path / "objects"))
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    store.put_bytes("inbox/b1/ok.png", b"ok")
    os.symlink(secret, store.local_path("inbox/b1/link.png"))
    os.symlink(tmp_path, store.local_path("inbox/linked-folder"))
    with pytest.raises(OutsideStoreError):
        store.get_bytes("inbox/b1/link.png")
    assert store.symlink_target("inbox/b1/link.png") == secret.resolve()
    assert store.list_folders("inbox") == ["b1"]  # a linked folder is never a batch


@pytest.mark.parametrize("name", ["../etc", "..", "/abs", "a/b", "a\\b", "%2e%2e", "-rf", ".hidden", "a" * 101, "", "name with space", "b1\n"], ids=repr)
def test_hostile_batch_names_are_refused(name):
    assert not is_valid_batch_name(name)


def test_published_file_names_stay_in_the_batch_folder():
    for sku in ["../../etc/passwd", "/abs/path", "..", "a/b\\c", "$(rm -rf ~)", ""]:
        key = publish_key("b1", sku, "0123abcd")
        assert key.startswith("published/b1/") and key.count("/") == 2 and ".." not in key


# ---------------------------------------------------------------------------- nothing unpickled


UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("cPickle", "load"), ("cPickle", "loads"), ("dill", "load"), ("dill", "loads"),
    ("joblib", "load"), ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"), ("pd", "read_pickle"),
    ("pandas", "read_pickle"), ("yaml", "load"), ("yaml", "unsafe_load"), ("mlflow.pyfunc", "load_model"),
}


def product_calls():
    for folder in PRODUCT:
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    yield path.relative_to(REPO).as_posix(), node


def dotted(func: ast.expr) -> tuple[str, str] | None:
    if isinstance(func, ast.Attribute):
        owner = func.value
        if isinstance(owner, ast.Name):
            return owner.id, func.attr
        if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name):
            return f"{owner.value.id}.{owner.attr}", func.attr
    if isinstance(func, ast.Name):
        return "", func.id
    return None


def test_no_product_code_unpickles_or_executes_anything():
    found = []
    torch_loads = 0
    for where, call in product_calls():
        name = dotted(call.func)
        if name is None:
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        if name in UNSAFE_CALLS:
            found.append(f"{where}:{call.lineno} {name[0]}.{name[1]}")
        if name == ("", "eval") or name == ("", "exec") or name == ("", "__import__"):
            found.append(f"{where}:{call.lineno} {name[1]}()")
        if name == ("torch", "load"):
            torch_loads += 1
            flag = keywords.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where}:{call.lineno} torch.load without weights_only=True")
        if name[1] == "load" and name[0] in ("np", "numpy"):
            flag = keywords.get("allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{where}:{call.lineno} np.load(allow_pickle=...)")
    assert found == []
    assert torch_loads >= 1  # the scan does see the model loader


def test_a_hostile_pickle_is_refused_by_the_model_loader(tmp_path):
    import pickle  # nosec B403: builds the hostile payload the test feeds to the loader

    import torch

    from ml.model import load_model_bytes

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(1), "payload": Exploit()}, buffer)
    with pytest.raises(pickle.UnpicklingError):
        load_model_bytes(buffer.getvalue())
    assert not marker.exists()


# ---------------------------------------------------------------------------- secrets


def test_secrets_from_the_environment_never_reach_logs_or_metadata(tmp_path, monkeypatch, capfd):
    from moto.server import ThreadedMotoServer

    from hitl_assets.assets.ingest import raw_images
    from hitl_assets.assets.review import review_decisions
    from hitl_assets.assets.routing import review_queue
    from resources import resources_from_env

    aws_secret = "AWSsecretKEY-6f1c9e2b7d"
    db_password = "dbPASSWORD-93b1a77c0e"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "HITL_HOME": str(tmp_path / "home"), "AWS_ACCESS_KEY_ID": "AKIAFAULTS", "AWS_SECRET_ACCESS_KEY": aws_secret,
            "AWS_DEFAULT_REGION": "us-east-1", "HITL_S3_BUCKET": "secrets-test", "HITL_S3_ENDPOINT_URL": f"http://{host}:{port}",
            # A PostgreSQL server that is down: the failing step's error and stack trace are where secrets usually leak
            "HITL_REVIEW_DB_URL": f"postgresql://hitl:{db_password}@127.0.0.1:1/hitl?connect_timeout=2",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        resources = resources_from_env()
        import boto3

        boto3.session.Session().client("s3", endpoint_url=env["HITL_S3_ENDPOINT_URL"]).create_bucket(Bucket="secrets-test")
        store = resources["object_store"]
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "PNG")
        store.put_bytes("inbox/s1/a.png", buf.getvalue())
        store.put_bytes("inbox/s1/bad.png", b"")
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("batches", ["s1"])
            ingest = dg.materialize([raw_images], partition_key="s1", resources=resources, instance=instance)
            decisions = dg.materialize([*review_queue.to_source_assets(), review_decisions], partition_key="s1", resources=resources, instance=instance, raise_on_error=False)
            assert ingest.success and not decisions.success  # the review database is unreachable: the run fails, and says why
            records = []
            for run in instance.get_runs():
                records.append(json.dumps(run.run_config, default=str) + json.dumps(dict(run.tags)))
                for entry in instance.all_logs(run.run_id):
                    records.append(entry.user_message or "")
                    records.append(repr(entry.dagster_event))
            metadata = [repr(m.metadata) for m in ingest.asset_materializations_for_node("raw_images")]
            failure = next(e for e in decisions.all_events if e.is_step_failure).step_failure_data.error.to_string()
        out, err = capfd.readouterr()
        everything = "\n".join(records + metadata + [failure, out, err])
        assert "Connection refused" in failure or "connection" in failure.lower()  # the real error is there, with its trace
        assert "bad.png" in everything  # what was collected is the real record: the quarantined file is named in it
        assert resources["review_store"].describe() == "postgresql://hitl:***@127.0.0.1:1/hitl?connect_timeout=2"
        assert aws_secret not in everything
        assert db_password not in everything
        # and the resources take secrets from the environment only: none is a configured field with a default
        assert aws_secret not in repr(resources["object_store"]) and db_password not in resources["review_store"].describe()
    finally:
        server.stop()


# ---------------------------------------------------------------------------- bandit


def test_bandit_finds_no_unexplained_medium_or_high_issue():
    bandit = Path(sys.executable).with_name("bandit")
    if not bandit.exists():
        pytest.fail("bandit is not installed in the virtual environment (pip install -e '.[dev]')")
    result = subprocess.run(
        [str(bandit), "-r", "hitl_assets", "ml", "resources", "-ll", "-f", "json", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    report = json.loads(result.stdout)
    issues = [f"{i['filename']}:{i['line_number']} {i['test_id']} {i['issue_severity']} {i['issue_text']}" for i in report["results"]]
    assert issues == [], "\n".join(issues)
    assert report["metrics"]["_totals"]["loc"] > 1000  # it did scan the product
