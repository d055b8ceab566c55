"""correction_dataset: a versioned training set from corrected masks and human-verified approvals."""

import hashlib
import io

import dagster as dg
import numpy as np
import pandas as pd

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


def dataset_items(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per image a human looked at and did not reject; the mask is the correction or the verified AI mask.

    Hidden gold checks are left out: their truth is already in the dataset.
    """
    if "kind" in decisions.columns:
        decisions = decisions[decisions["kind"] != "gold"]
    if decisions.empty:
        return pd.DataFrame(columns=["image_id", "batch", "sku", "category", "file", "image_key", "mask_key", "source", "event_id", "policy_version"])
    ordered = decisions.sort_values("event_id")
    grouped = ordered.groupby("image_id")
    rejected = ordered["decision"].eq("reject").groupby(ordered["image_id"]).any()
    last = grouped.tail(1).set_index("image_id")
    corrections = ordered[ordered["decision"] == "correct"].groupby("image_id").tail(1).set_index("image_id")
    items = last.loc[~rejected.reindex(last.index).values].copy()
    items["source"] = "verified"
    has_fix = items.index.isin(corrections.index)
    items.loc[has_fix, "mask_key"] = corrections.loc[items.index[has_fix], "corrected_mask_key"].values
    items.loc[has_fix, "source"] = "corrected"
    items = items.reset_index()
    return items[["image_id", "batch", "sku", "category", "file", "image_key", "mask_key", "source", "event_id", "policy_version"]]


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
    """Content hash of the dataset: same images, masks and splits give the same version."""
    lines = sorted((frame["image_id"].astype(str) + ":" + frame["mask_digest"].astype(str) + ":" + frame["split"].astype(str)).tolist())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


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
