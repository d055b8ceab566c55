"""published_images: approved composites written to the publish location; nothing unapproved, ever."""

import re

import dagster as dg
import pandas as pd

from hitl_assets.assets.inference import InferenceConfig, render_outputs
from hitl_assets.partitions import batches
from ml.imageio import decode_mask
from resources.object_store import ObjectStore

PUBLISH_PREFIX = "published"


def final_status(queue: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per image: approved (auto, human or corrected), rejected, or pending a human decision.

    Human decisions override the route; with two reviewers, any reject rejects and the latest
    correction supplies the mask. An image still waiting for a person is never approved.
    Hidden gold checks score reviewers and never change an item's outcome.
    """
    if "kind" in decisions.columns:
        decisions = decisions[decisions["kind"] != "gold"]
    if len(decisions):  # vectorised (no per-image Python): linear in the number of decisions
        ordered = decisions.sort_values("event_id", kind="stable")
        keys = ordered["corrected_mask_key"].fillna("").astype(str)
        grouped = ordered.assign(
            _reject=ordered["decision"].eq("reject"), _correct=ordered["decision"].eq("correct"), _key=keys.where(keys != ""),
        ).groupby("image_id")
        human = pd.DataFrame({
            "any_reject": grouped["_reject"].any(),
            "any_correct": grouped["_correct"].any(),
            "corrected_mask_key": grouped["_key"].last().fillna(""),  # the latest non-empty correction
            "decisions": grouped["decision"].count(),
        })
    else:
        human = pd.DataFrame(columns=["any_reject", "any_correct", "corrected_mask_key", "decisions"])
    out = queue.merge(human, left_on="image_id", right_index=True, how="left")
    needs_human = (out["route"] == "escalate") | out["audit"].astype(bool)
    expected = needs_human.astype(int) * (1 + out["double_review"].astype(int))
    decided = out["decisions"].fillna(0).astype(int)
    status = pd.Series("approved_auto", index=out.index)
    status[needs_human & (decided < expected)] = "pending"
    # A person's decision always counts, also on an item a new champion has since re-scored as auto-approved.
    complete = (needs_human & (decided >= expected)) | (~needs_human & (decided > 0))
    status[complete] = "approved_human"
    status[complete & out["any_correct"].fillna(False).astype(bool)] = "approved_corrected"
    status[complete & out["any_reject"].fillna(False).astype(bool)] = "rejected"
    out["final_status"] = status
    out["corrected_mask_key"] = out["corrected_mask_key"].fillna("")
    return out


def publish_key(batch: str, sku: str, image_id: str) -> str:
    """Published file name: the sku (made safe for a key) and the image id."""
    safe_sku = re.sub(r"[^A-Za-z0-9._-]+", "_", str(sku)).strip("._") or "item"
    return f"{PUBLISH_PREFIX}/{batch}/{safe_sku}__{image_id}.jpg"


@dg.asset(
    partitions_def=batches,
    group_name="publish",
    check_specs=[dg.AssetCheckSpec("nothing_unapproved_published", asset="published_images", description="The publish location holds exactly the approved images of the batch.")],
)
def published_images(context: dg.AssetExecutionContext, config: InferenceConfig, review_queue: pd.DataFrame, review_decisions: pd.DataFrame, object_store: ObjectStore):
    """Write approved images (auto-approved, human-approved or corrected) to the publish location."""
    batch = context.partition_key
    status = final_status(review_queue, review_decisions)
    approved = status[status["final_status"].str.startswith("approved")].copy()
    approved["published_key"] = [publish_key(batch, sku, image_id) for sku, image_id in zip(approved["sku"], approved["image_id"])]
    brand = config.brand()
    done = 0
    try:
        for row in approved.to_dict("records"):
            if row["final_status"] == "approved_corrected":
                # Re-render the composite at full size from the reviewer's mask.
                mask = decode_mask(object_store.get_bytes(row["corrected_mask_key"]), row["corrected_mask_key"])
                base = row["corrected_mask_key"].rsplit(".", 1)[0]
                keys = {"mask_key": f"{base}-final-mask.png", "cutout_key": f"{base}-cutout.png", "composite_key": f"{base}-composite.jpg"}
                render_outputs(object_store, row, None, brand, keys, config.jpeg_quality, mask=mask)
                source = keys["composite_key"]
            else:
                source = row["composite_key"]
            # Each file is written atomically: it is either whole at the publish location or absent.
            object_store.put_bytes(row["published_key"], object_store.get_bytes(source), "image/jpeg")
            done += 1
    except OSError as err:  # a full disk (ENOSPC), a quota, a read-only mount: say so and record nothing
        why = err.strerror or str(err)
        raise dg.Failure(
            f"batch {batch!r}: publishing stopped after {done} of {len(approved)} approved image(s): the publish location "
            f"{object_store.describe()}/{PUBLISH_PREFIX}/{batch}/ could not be written ({why}, errno {err.errno}). "
            "Nothing was recorded as published by this run; free space and re-run the partition (re-running is idempotent)."
        ) from err
    # Anything else under this batch's publish prefix (a re-run after a rejection, say) is withdrawn.
    wanted = set(approved["published_key"])
    withdrawn = [e.key for e in object_store.list(f"{PUBLISH_PREFIX}/{batch}/") if e.key not in wanted]
    for key in withdrawn:
        object_store.delete(key)
    status["published_key"] = status["image_id"].map(dict(zip(approved["image_id"], approved["published_key"]))).fillna("")
    counts = status["final_status"].value_counts().to_dict()
    keep = ["image_id", "sku", "category", "file", "route", "audit", "double_review", "reasons", "final_status", "corrected_mask_key", "published_key", "model_version", "policy_version"]
    published = status[keep]
    yield dg.Output(
        published,
        metadata={
            "published": len(approved),
            "withdrawn": len(withdrawn),
            "status_counts": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
            "location": f"{object_store.describe()}/{PUBLISH_PREFIX}/{batch}/",
        },
    )
    present = {e.key for e in object_store.list(f"{PUBLISH_PREFIX}/{batch}/")}
    unapproved = present - wanted
    missing = wanted - present
    yield dg.AssetCheckResult(
        check_name="nothing_unapproved_published",
        passed=not unapproved and not missing,
        metadata={"unapproved_present": len(unapproved), "approved_missing": len(missing)},
    )
