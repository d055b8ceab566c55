"""correction_dataset: a versioned training set from corrected masks and human-verified approvals."""

import hashlib
import io

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ml.imageio import decode_mask, encode_png, load_rgb
from resources.object_store import ObjectStore
from resources.review_store import ReviewStore

DATASET_PREFIX = "datasets"


class DatasetConfig(dg.Config):
    """How the correction dataset is split and stored."""

    gold_fraction: float = 0.2
    sample_max_side: int = 384


def gold_share(image_ids: pd.Series) -> pd.Series:
    """A stable number in [0, 1) per image id: the gold split never depends on run order or batch."""
    hashed = pd.util.hash_pandas_object(image_ids.astype(str) + ":gold", index=False, hash_key="hitl-gold-split0")
    return hashed.astype("float64") / 2.0**64


DATASET_COLUMNS = ["image_id", "batch", "sku", "category", "file", "image_key", "mask_key", "source", "event_id", "policy_version"]


def dataset_items(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per image a human looked at and did not reject; the mask is the correction or the verified AI mask.

    Hidden gold checks are left out: their truth is already in the dataset. Rows come in the
    order of each image's latest event. Image ids are factorised once and every per-image
    question (latest event, any reject, latest correction) is a numpy scatter over those integer
    codes, so the cost grows linearly with the decisions (1M-row catalog: 267k decisions).
    """
    columns = [name for name in DATASET_COLUMNS if name != "source"]  # "source" is decided here
    # only the columns used below are copied and gathered (a decisions table has twice as many)
    used = [*columns, *(c for c in ("decision", "corrected_mask_key") if c not in columns)]
    if "kind" in decisions.columns:
        decisions = decisions.loc[(decisions["kind"] != "gold").to_numpy(), used]
    else:
        decisions = decisions[used]
    if decisions.empty:
        return pd.DataFrame(columns=DATASET_COLUMNS)
    codes, uniques = pd.factorize(decisions["image_id"])
    n_images = len(uniques)
    order = np.argsort(decisions["event_id"].to_numpy(), kind="stable")  # rows by event id
    codes_by_event = codes[order]
    # scatter in event order: for a repeated image the last (latest) write wins
    latest_rank = np.empty(n_images, np.int64)  # each image's latest event, as a position in `order`
    latest_rank[codes_by_event] = np.arange(len(order))
    decision = decisions["decision"].to_numpy(dtype=object)
    rejected = np.zeros(n_images, bool)
    rejected[codes[decision == "reject"]] = True
    corrected_by_event = (decision == "correct")[order]
    latest_fix = np.full(n_images, -1, np.int64)
    latest_fix[codes_by_event[corrected_by_event]] = order[corrected_by_event]

    kept = np.flatnonzero(~rejected)
    kept = kept[np.argsort(latest_rank[kept], kind="stable")]
    items = decisions[columns].iloc[order[latest_rank[kept]]].reset_index(drop=True)
    fixes = latest_fix[kept]
    has_fix = fixes >= 0
    mask_keys = items["mask_key"].to_numpy(dtype=object)
    mask_keys[has_fix] = decisions["corrected_mask_key"].to_numpy(dtype=object)[fixes[has_fix]]
    items["mask_key"] = mask_keys
    items["source"] = np.where(has_fix, "corrected", "verified")
    return items[DATASET_COLUMNS]


def ensure_sample(store: ObjectStore, item: dict, max_side: int) -> tuple[str, str, str]:
    """Training-ready copies (reduced size) of the image and its mask, keyed by content; returns keys and mask digest."""
    mask_bytes = store.get_bytes(item["mask_key"])
    digest = hashlib.sha256(mask_bytes).hexdigest()[:16]
    base = f"{DATASET_PREFIX}/samples/{item['image_id']}/{digest}"
    image_key, mask_key = f"{base}/image.png", f"{base}/mask.png"
    if not (store.exists(image_key) and store.exists(mask_key)):
        import cv2

        image = load_rgb(store.get_bytes(item["image_key"]), item["file"], max_side=max_side)
        mask = decode_mask(mask_bytes, item["mask_key"])
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        store.put_bytes(image_key, encode_png(image), "image/png")
        store.put_bytes(mask_key, encode_png(mask), "image/png")
    return image_key, mask_key, digest


def dataset_version(frame: pd.DataFrame) -> str:
    """Content hash of the dataset: same images, masks and splits give the same version.

    sha256 of the sorted lines ``image_id:mask_digest:split`` joined by newlines (first 12 hex
    digits). The lines are joined, sorted and laid end to end by Arrow: the same bytes as sorting
    a Python list of them, in half the time (250k items: 0.11 s against 0.24 s).
    """
    text = pa.large_string()
    parts = [pa.array(frame[column].astype(str), type=text) for column in ("image_id", "mask_digest", "split")]
    lines = pc.binary_join_element_wise(*parts, pa.scalar(":", text))
    if lines.null_count:
        raise ValueError("dataset_version: image_id, mask_digest and split must be set on every row")
    if not len(lines):
        return hashlib.sha256(b"").hexdigest()[:12]
    lines = lines.take(pc.sort_indices(lines))
    ended = pc.binary_join_element_wise(lines, pa.scalar("", text), pa.scalar("\n", text))  # each line + "\n"
    offsets = np.frombuffer(ended.buffers()[1], dtype=np.int64)
    body = memoryview(ended.buffers()[2])[offsets[ended.offset] : offsets[ended.offset + len(ended)] - 1]  # no final "\n"
    return hashlib.sha256(body).hexdigest()[:12]


@dg.asset(
    group_name="learning",
    deps=["review_decisions"],
    check_specs=[dg.AssetCheckSpec("gold_not_in_train", asset="correction_dataset", description="No gold hold-out image is in the training split, and the split follows the stable hash.")],
)
def correction_dataset(context: dg.AssetExecutionContext, config: DatasetConfig, object_store: ObjectStore, review_store: ReviewStore):
    """Versioned training set built from corrections and verified approvals, with a gold hold-out never trained on."""
    items = dataset_items(review_store.latest_decisions())
    items["split"] = np.where(gold_share(items["image_id"]) < config.gold_fraction, "gold", "train")
    keys = [ensure_sample(object_store, item, config.sample_max_side) for item in items.to_dict("records")]
    items["sample_image_key"] = [k[0] for k in keys]
    items["sample_mask_key"] = [k[1] for k in keys]
    items["mask_digest"] = [k[2] for k in keys]
    version = dataset_version(items)
    items["dataset_version"] = version
    buffer = io.BytesIO()
    items.to_parquet(buffer, index=False)
    object_store.put_bytes(f"{DATASET_PREFIX}/{version}/manifest.parquet", buffer.getvalue())
    counts = items.groupby(["category", "split"]).size().unstack(fill_value=0) if len(items) else pd.DataFrame()
    yield dg.Output(
        items,
        metadata={
            "dataset_version": version,
            "images": len(items),
            "train": int((items["split"] == "train").sum()),
            "gold": int((items["split"] == "gold").sum()),
            "corrected": int((items["source"] == "corrected").sum()),
            "verified": int((items["source"] == "verified").sum()),
            "counts": dg.MetadataValue.md(counts.to_markdown() if len(counts) else "empty"),
            "lineage_batches": dg.MetadataValue.json(sorted(items["batch"].unique().tolist())),
            "lineage_policy_versions": dg.MetadataValue.json(sorted(items["policy_version"].unique().tolist())),
            "lineage_last_event_id": int(items["event_id"].max()) if len(items) else 0,
            "manifest": f"{DATASET_PREFIX}/{version}/manifest.parquet",
        },
    )
    train_ids = set(items.loc[items["split"] == "train", "image_id"])
    gold_ids = set(items.loc[items["split"] == "gold", "image_id"])
    expected_gold = set(items.loc[gold_share(items["image_id"]) < config.gold_fraction, "image_id"])
    yield dg.AssetCheckResult(
        check_name="gold_not_in_train",
        passed=not (train_ids & gold_ids) and gold_ids == expected_gold,
        metadata={"overlap": len(train_ids & gold_ids), "gold": len(gold_ids)},
    )
