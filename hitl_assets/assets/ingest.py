"""raw_images: a batch's files from the inbox, content-hashed, validated, bad files quarantined."""

import hashlib
import io
import json
from pathlib import PurePosixPath

import dagster as dg
import pandas as pd

from hitl_assets.partitions import INBOX_PREFIX, batches
from ml.imageio import ImageRejected, inspect_image
from resources.object_store import ObjectStore

MANIFEST_NAMES = ("catalog.csv", "manifest.csv")
RAW_COLUMNS = [
    "image_id", "file", "also_named", "sku", "category", "status", "reason", "detail",
    "width", "height", "format", "bytes", "image_key",
]


def content_id(data: bytes) -> str:
    """Content-hash image id: identical bytes get the same id whatever their file name."""
    return hashlib.sha256(data).hexdigest()[:20]


def read_manifest(store: ObjectStore, prefix: str) -> dict[str, dict]:
    """file name -> {sku, category} from the batch's catalog.csv / manifest.csv, when one was dropped."""
    for name in MANIFEST_NAMES:
        key = f"{prefix}/{name}"
        if store.exists(key):
            frame = pd.read_csv(io.BytesIO(store.get_bytes(key)), dtype=str).fillna("")
            if "file" not in frame.columns:
                raise dg.Failure(f"{key}: the manifest needs a 'file' column (found {', '.join(frame.columns)})")
            return {row["file"]: row for row in frame.to_dict("records")}
    return {}


def quarantine(store: ObjectStore, batch: str, file: str, data: bytes | None, reason: str, detail: str) -> None:
    """Keep the bad file and why it was refused; nothing a supplier sent is lost."""
    base = f"quarantine/{batch}/{file}"
    if data is not None:
        store.put_bytes(base, data)
    store.put_bytes(f"{base}.reason.json", json.dumps({"file": file, "reason": reason, "detail": detail}).encode())


@dg.asset(
    partitions_def=batches,
    group_name="ingest",
    check_specs=[dg.AssetCheckSpec("accepted_images_readable", asset="raw_images", description="Every accepted image has a stored original and a size; the batch is not mostly quarantined.")],
)
def raw_images(context: dg.AssetExecutionContext, object_store: ObjectStore):
    """Manifest of the batch's images: content-hash id, sku, category, size, object key; bad files quarantined."""
    batch = context.partition_key
    prefix = f"{INBOX_PREFIX}/{batch}"
    manifest = read_manifest(object_store, prefix)
    rows: list[dict] = []
    by_id: dict[str, dict] = {}
    entries = [e for e in object_store.list(prefix + "/") if PurePosixPath(e.key).name not in MANIFEST_NAMES]
    for entry in entries:
        file = entry.key[len(prefix) + 1 :]
        info = manifest.get(file, {})
        row = {
            "image_id": "", "file": file, "also_named": "", "sku": info.get("sku") or PurePosixPath(file).stem,
            "category": info.get("category") or "unknown", "status": "accepted", "reason": "", "detail": "",
            "width": 0, "height": 0, "format": "", "bytes": 0, "image_key": "",
        }
        try:
            data = object_store.get_bytes(entry.key)
        except FileNotFoundError:
            row.update(status="quarantined", reason="vanished", detail="the file disappeared between listing and reading")
            quarantine(object_store, batch, file, None, row["reason"], row["detail"])
            rows.append(row)
            continue
        row["bytes"] = len(data)
        try:
            image = inspect_image(data, file)
        except ImageRejected as err:
            row.update(status="quarantined", reason=err.reason, detail=str(err))
            quarantine(object_store, batch, file, data, err.reason, str(err))
            context.log.warning(f"quarantined {str(err)}")
            rows.append(row)
            continue
        image_id = content_id(data)
        if image_id in by_id:  # same content under two names: keep once, remember both names
            first = by_id[image_id]
            first["also_named"] = ";".join(filter(None, [first["also_named"], file]))
            continue
        suffix = PurePosixPath(file).suffix.lower() or ".img"
        image_key = f"originals/{image_id}{suffix}"
        if not object_store.exists(image_key):
            object_store.put_bytes(image_key, data)
        row.update(image_id=image_id, width=image.width, height=image.height, format=image.format, image_key=image_key)
        by_id[image_id] = row
        rows.append(row)
    frame = pd.DataFrame(rows, columns=RAW_COLUMNS)
    accepted = frame[frame["status"] == "accepted"]
    quarantined = frame[frame["status"] == "quarantined"]
    if frame.empty:
        raise dg.Failure(f"batch {batch!r}: no files under {object_store.describe()}/{prefix}/")
    yield dg.Output(
        frame,
        metadata={
            "accepted": len(accepted),
            "quarantined": len(quarantined),
            "duplicates_merged": int((frame["also_named"] != "").sum()),
            "categories": dg.MetadataValue.json(accepted["category"].value_counts().to_dict()),
            "quarantine_reasons": dg.MetadataValue.md(
                quarantined[["file", "reason"]].to_markdown(index=False) if len(quarantined) else "none"
            ),
        },
    )
    quarantine_share = len(quarantined) / max(len(frame), 1)
    yield dg.AssetCheckResult(
        check_name="accepted_images_readable",
        passed=bool((accepted["width"] > 0).all() and (accepted["image_key"] != "").all() and quarantine_share < 0.5),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantine_share": quarantine_share, "accepted": len(accepted)},
    )
