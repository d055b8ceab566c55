"""Bad supplier folders through ``raw_images`` and the inbox sensor, and ``hitl ingest DIR`` end to end.

The file-level kinds come from ``tests/ml/bad_inputs.py``; the folder-level kinds are here: a file
that vanishes between listing and reading, a file still being written, symbolic links out of the
inbox, the same content under two names, names with spaces, unicode and shell characters.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from hitl_assets.assets.ingest import raw_images
from hitl_assets.cli import main
from hitl_assets.definitions import build_definitions
from hitl_assets.sensors import inbox_sensor
from resources import ModelRegistry, ObjectStore
from resources.tables import read_table

_spec = importlib.util.spec_from_file_location("bad_inputs", Path(__file__).parents[1] / "ml" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bad_inputs)

ODD_NAMES = ["summer sale (1).png", "café-ñandú-日本.png", "$(touch pwned); rm -rf ~.png", "quote'\"`&|<>.png", "-leading-dash.png"]


def png(seed: int) -> bytes:
    from PIL import Image

    return bad_inputs.save(Image.fromarray(bad_inputs.photo(80, 64, seed=seed)), "PNG")


def materialize_raw(resources: dict, instance, batch: str):
    instance.add_dynamic_partitions("batches", [batch])
    return dg.materialize([raw_images], partition_key=batch, resources=resources, instance=instance, raise_on_error=False)


class VanishingStore(ObjectStore):
    """A local store whose listing is followed at once by one file disappearing (as a supplier deleting it)."""

    vanish: str = ""

    def list(self, prefix: str = ""):
        entries = super().list(prefix)
        if self.vanish and prefix.startswith("inbox/"):
            (Path(self.root) / self.vanish).unlink(missing_ok=True)
        return entries


def test_every_bad_kind_is_quarantined_with_its_reason_and_the_rest_of_the_batch_goes_on(tmp_path, hitl_resources, instance):
    store = VanishingStore(root=str(tmp_path / "objects"), vanish="inbox/b1/vanishing.png")
    resources = {**hitl_resources, "object_store": store}
    resources["io_manager"] = type(hitl_resources["io_manager"])(object_store=store)
    expected: dict[str, str] = {}
    for name, data, reason in bad_inputs.bad_files():
        store.put_bytes(f"inbox/b1/{name}", data)
        expected[name] = reason
    valid = bad_inputs.unusual_valid_files()
    for name, data, _ in valid:
        store.put_bytes(f"inbox/b1/{name}", data)
    for i, name in enumerate(ODD_NAMES):
        store.put_bytes(f"inbox/b1/{name}", png(100 + i))
    store.put_bytes("inbox/b1/product.png", png(1))
    store.put_bytes("inbox/b1/product copy.png", png(1))  # same content, second name
    store.put_bytes("inbox/b1/nested/deeper.png", png(2))
    store.put_bytes("inbox/b1/vanishing.png", png(3))
    expected["vanishing.png"] = "vanished"
    outside = tmp_path / "outside" / "secret.png"
    outside.parent.mkdir()
    outside.write_bytes(png(4))
    os.symlink(outside, store.local_path("inbox/b1/link-out.png"))
    expected["link-out.png"] = "symlink_outside_inbox"
    os.symlink("/etc/passwd", store.local_path("inbox/b1/passwd.png"))
    expected["passwd.png"] = "symlink_outside_inbox"
    os.symlink(store.local_path("inbox/b1/nested/deeper.png"), store.local_path("inbox/b1/link-in.png"))  # stays inside

    result = materialize_raw(resources, instance, "b1")
    assert result.success
    raw = read_table(store, "raw_images", "b1")
    quarantined = raw[raw["status"] == "quarantined"].set_index("file")
    assert {f: quarantined.loc[f, "reason"] for f in quarantined.index} == expected
    for file, row in quarantined.iterrows():
        assert file in row["detail"] and row["reason"] in row["detail"] or row["reason"] in ("vanished", "symlink_outside_inbox")
        reason = json.loads(store.get_bytes(f"quarantine/b1/{file}.reason.json"))
        assert reason["reason"] == expected[file]
    # nothing behind a refused link was read or copied
    assert not store.exists("quarantine/b1/link-out.png") and not store.exists("quarantine/b1/passwd.png")
    assert b"root:" not in b"".join(store.get_bytes(e.key) for e in store.list("originals/"))

    accepted = raw[raw["status"] == "accepted"].set_index("file")
    for name, _, (width, height) in valid:
        assert (accepted.loc[name, "width"], accepted.loc[name, "height"]) == (width, height), name
    assert set(ODD_NAMES) <= set(accepted.index)
    # the same content under two names is kept once (the first name in listing order), both names recorded
    assert accepted.loc["product copy.png", "also_named"] == "product.png"
    assert "product.png" not in accepted.index
    assert accepted.loc["link-in.png", "also_named"] == "nested/deeper.png"  # a link inside the folder is fine
    assert accepted["image_id"].is_unique
    assert len(accepted) == len(valid) + len(ODD_NAMES) + 2
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_an_object_store_failure_mid_batch_fails_clearly_and_leaves_no_partial_outputs(tmp_path, hitl_resources, instance):
    class FailingStore(ObjectStore):
        def put_bytes(self, key, data, content_type=None):
            if key.startswith("originals/") and len(list(Path(self.root, "originals").glob("*"))) >= 2:
                raise OSError(5, "Input/output error (injected)")
            return super().put_bytes(key, data, content_type)

    store = FailingStore(root=str(tmp_path / "objects"))
    resources = {**hitl_resources, "object_store": store, "io_manager": type(hitl_resources["io_manager"])(object_store=store)}
    for i in range(4):
        store.put_bytes(f"inbox/b2/{i}.png", png(i))
    store.put_bytes("inbox/b2/bad.png", b"<html>")
    result = materialize_raw(resources, instance, "b2")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "object store failed" in message and "Input/output error" in message
    assert store.list("originals/") == [] and store.list("quarantine/") == []
    assert not store.exists("tables/raw_images/b2.parquet")


def tick(resources, instance, cursor=None):
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor, resources=resources, definitions=build_definitions(resources)) as context:
        return inbox_sensor.evaluate_tick(context)


def test_a_file_still_being_written_holds_the_batch_until_its_size_is_stable(object_store, hitl_resources, instance):
    data = png(9)
    path = object_store.local_path("inbox/b3/growing.png")
    path.parent.mkdir(parents=True)
    path.write_bytes(data[:100])
    object_store.put_bytes("inbox/b3/done.png", png(8))
    first = tick(hitl_resources, instance)
    with path.open("ab") as handle:  # the upload goes on
        handle.write(data[100:300])
    second = tick(hitl_resources, instance, first.cursor)
    assert not first.run_requests and not second.run_requests
    with path.open("ab") as handle:
        handle.write(data[300:])
    third = tick(hitl_resources, instance, second.cursor)
    assert not third.run_requests  # changed again since the last tick
    fourth = tick(hitl_resources, instance, third.cursor)
    assert [r.partition_key for r in fourth.run_requests] == ["b3"]

    # an upload tool's temporary name holds the folder, however long it stays unchanged
    object_store.put_bytes("inbox/b4/a.png", png(7))
    object_store.put_bytes("inbox/b4/b.png.part", data[:50])
    cursor = fourth.cursor
    for _ in range(3):
        result = tick(hitl_resources, instance, cursor)
        assert "b4" not in [r.partition_key for r in result.run_requests]
        cursor = result.cursor


def test_symlinked_batch_folders_and_loose_files_are_never_ingested(tmp_path, object_store, hitl_resources, instance):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(png(5))
    object_store.local_path("inbox").mkdir(parents=True)
    os.symlink(outside, object_store.local_path("inbox/linked"))
    object_store.put_bytes("inbox/loose.png", png(6))
    first = tick(hitl_resources, instance)
    second = tick(hitl_resources, instance, first.cursor)
    assert not first.run_requests and not second.run_requests
    assert json.loads(second.cursor)["pending"] == {}


# ----------------------------------------------------------------------------- hitl ingest


def cli_env(tmp_path: Path, registry: ModelRegistry | None) -> dict:
    home = tmp_path / "home"
    env = {"HITL_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    if registry is not None:
        env.update(MLFLOW_TRACKING_URI=registry.tracking_uri, HITL_MLFLOW_ARTIFACTS=registry.artifact_location)
    else:
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{home / 'empty-mlflow.db'}", HITL_MLFLOW_ARTIFACTS=str(home / "mlartifacts"))
    return env


def make_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "Supplier Drop #7"
    (folder / "sub").mkdir(parents=True)
    (folder / "shoe one.png").write_bytes(png(11))
    (folder / "shoe one (copy).png").write_bytes(png(11))
    (folder / "sub" / "bag.png").write_bytes(png(12))
    (folder / "rotated.jpg").write_bytes(bad_inputs.exif_rotated_jpeg())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "page.png").write_bytes(b"<html><body>404</body></html>")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "secret.txt").write_text("password=hunter2\n")
    os.symlink(tmp_path / "secret.txt", folder / "escape.png")
    os.mkfifo(folder / "pipe.png")  # reading it would block forever: never opened
    (folder / "catalog.csv").write_text("file,sku,category\nshoe one.png,SKU-1,shoe\nsub/bag.png,SKU-2,bag\n")
    return folder


def test_hitl_ingest_runs_the_batch_through_dagster_and_reports_every_file(tmp_path, monkeypatch, champion_registry):
    for key, value in cli_env(tmp_path, champion_registry).items():
        monkeypatch.setenv(key, value)
    folder = make_folder(tmp_path)
    report_file = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["ingest", str(folder), "--report", str(report_file)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(report_file.read_text())
    assert report["batch"] == "Supplier-Drop-7" and report["status"] == "completed"
    accepted = {r["file"]: r["image_id"] for r in report["accepted"]}
    assert set(accepted) == {"shoe one.png", "shoe one (copy).png", "sub/bag.png", "rotated.jpg"}
    assert accepted["shoe one.png"] == accepted["shoe one (copy).png"]
    assert {r["file"]: r["reason"] for r in report["quarantined"]} == {
        "empty.jpg": "empty_file", "page.png": "not_an_image", "escape.png": "symlink_outside_inbox", "pipe.png": "not_a_regular_file",
    }
    assert "hunter2" not in report_file.read_text()

    # it went through Dagster: the partition, one ingest run, and every asset up to review_queue
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("batches") == ["Supplier-Drop-7"]
        runs = instance.get_runs(dg.RunsFilter(tags={"hitl/batch": "Supplier-Drop-7"}))
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS and runs[0].job_name == "ingest_job"
    store = ObjectStore.from_env()
    queue = read_table(store, "review_queue", "Supplier-Drop-7")
    assert len(queue) == 3 and sum(report["review_queue"].values()) == 3
    # EXIF orientation was applied before the model saw the picture: its mask is upright
    from ml.imageio import decode_mask

    outputs = read_table(store, "ai_outputs", "Supplier-Drop-7").set_index("file")
    assert (outputs.loc["rotated.jpg", "width"], outputs.loc["rotated.jpg", "height"]) == (64, 96)
    assert decode_mask(store.get_bytes(outputs.loc["rotated.jpg", "mask_key"])).shape == (96, 64)

    # the same batch again is refused clearly, and nothing is created twice
    again = CliRunner().invoke(main, ["ingest", str(folder), "--report", str(report_file)])
    assert again.exit_code != 0 and "already exists" in again.output


def test_hitl_ingest_exits_non_zero_with_a_clear_message_when_the_batch_cannot_run(tmp_path, monkeypatch):
    for key, value in cli_env(tmp_path, None).items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(21))
    (folder / "broken.png").write_bytes(b"")
    report_file = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["ingest", str(folder), "--batch", "no-model", "--report", str(report_file)])
    assert result.exit_code == 1
    assert "could not run" in result.output and "no champion" in result.output
    report = json.loads(report_file.read_text())
    assert report["status"] == "failed" and "no champion" in report["error"]
    assert [r["file"] for r in report["accepted"]] == ["a.png"]  # raw_images ran; the model step could not
    assert [r["reason"] for r in report["quarantined"]] == ["empty_file"]

    bad_name = CliRunner().invoke(main, ["ingest", str(folder), "--batch", "../etc"])
    assert bad_name.exit_code == 2 and "batch name" in bad_name.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(main, ["ingest", str(empty)])
    assert nothing.exit_code == 1 and "no files" in nothing.output
