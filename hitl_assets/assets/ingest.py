"""raw_images: a batch's files from the inbox, content-hashed, validated, bad files quarantined."""

import hashlib
import io
import json
from pathlib import PurePosixPath

import dagster as dg
import pandas as pd

from hitl_assets.partitions import INBOX_PREFIX, batches
from ml.imageio import ImageRejected, inspect_image
from resources.object_store import ObjectStore, OutsideStoreError

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


def quarantine(store: ObjectStore, batch: str, file: str, data: bytes | None, reason: str, detail: str) -> list[str]:
    """Keep the bad file and why it was refused; nothing a supplier sent is lost. Returns the keys written."""
    base = f"quarantine/{batch}/{file}"
    written = []
    if data is not None:
        written.append(store.put_bytes(base, data))
    written.append(store.put_bytes(f"{base}.reason.json", json.dumps({"file": file, "reason": reason, "detail": detail}).encode()))
    return written


def link_outside(store: ObjectStore, key: str, folder: str) -> str | None:
    """Why a symbolic link in the inbox is refused (it leads outside the batch's folder), or None when ``key`` is fine."""
    target = store.symlink_target(key)
    if target is None:
        return None
    if store.local_path(folder).resolve() in target.parents:
        return None
    return "symbolic link pointing outside the batch's inbox folder; refused and not followed"


def ingest_entries(context, object_store: ObjectStore, batch: str, prefix: str, manifest: dict, entries: list, written: list[str]) -> list[dict]:
    """Validate each listed file: one accepted row per distinct content, quarantined rows with their reason.

    Every object key this creates is appended to ``written`` as it goes.
    """
    rows: list[dict] = []
    by_id: dict[str, dict] = {}

    def refuse(row: dict, reason: str, detail: str, data: bytes | None) -> None:
        row.update(status="quarantined", reason=reason, detail=detail)
        written.extend(quarantine(object_store, batch, row["file"], data, reason, detail))
        context.log.warning(f"quarantined {detail}")
        rows.append(row)

    for entry in entries:
        file = entry.key[len(prefix) + 1 :]
        info = manifest.get(file, {})
        row = {
            "image_id": "", "file": file, "also_named": "", "sku": info.get("sku") or PurePosixPath(file).stem,
            "category": info.get("category") or "unknown", "status": "accepted", "reason": "", "detail": "",
            "width": 0, "height": 0, "format": "", "bytes": 0, "image_key": "",
        }
        refused = link_outside(object_store, entry.key, prefix)
        if refused:
            refuse(row, "symlink_outside_inbox", f"{file}: {refused}", None)
            continue
        try:
            data = object_store.get_bytes(entry.key)
        except FileNotFoundError:
            refuse(row, "vanished", f"{file}: the file disappeared between listing and reading", None)
            continue
        except OutsideStoreError as err:  # a link the store itself refuses to follow
            refuse(row, "symlink_outside_inbox", f"{file}: {err}", None)
            continue
        except PermissionError as err:
            refuse(row, "unreadable", f"{file}: the file cannot be read ({err.strerror or err})", None)
            continue
        row["bytes"] = len(data)
        try:
            image = inspect_image(data, file)
        except ImageRejected as err:
            refuse(row, err.reason, str(err), data)
            continue
        image_id = content_id(data)
        if image_id in by_id:  # same content under two names: keep once, remember both names
            first = by_id[image_id]
            first["also_named"] = ";".join(filter(None, [first["also_named"], file]))
            continue
        suffix = PurePosixPath(file).suffix.lower() or ".img"
        image_key = f"originals/{image_id}{suffix}"
        if not object_store.exists(image_key):
            written.append(object_store.put_bytes(image_key, data))
        row.update(image_id=image_id, width=image.width, height=image.height, format=image.format, image_key=image_key)
        by_id[image_id] = row
        rows.append(row)
    return rows


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
    entries = [e for e in object_store.list(prefix + "/") if PurePosixPath(e.key).name not in MANIFEST_NAMES]
    written: list[str] = []  # keys this run created: removed again if the run fails, so a failure leaves no partial outputs
    try:
        rows = ingest_entries(context, object_store, batch, prefix, manifest, entries, written)
    except Exception as err:
        for key in reversed(written):
            try:
                object_store.delete(key)
            except Exception:  # nosec B110 # best effort: the store is failing already, and the Failure below says so
                pass
        raise dg.Failure(
            f"batch {batch!r}: ingest stopped after {len(written)} object write(s) because the object store failed "
            f"({type(err).__name__}: {err}); what this run had written was removed; re-run the batch when the store is back"
        ) from err
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
