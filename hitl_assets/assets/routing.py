"""review_queue: the tolerance policy applied to every AI output: auto-approve or escalate, with reasons."""

import dagster as dg
import numpy as np
import pandas as pd

from hitl_assets.partitions import batches
from hitl_assets.rescore import mark_rescored
from ml.lookup import contains, positions
from ml.policy import reason_counts, route, sample_uniform
from resources.object_store import ObjectStore
from resources.policy import TolerancePolicy
from resources.tables import read_table

GOLD_KIND = "gold"  # hidden known-truth check; looks like an audit to the reviewer
GOLD_SLOT = 2


def _task_row(batch: str, item: dict, kind: str, slot: int, key: str) -> dict:
    signals = {name: round(float(item[name]), 4) for name in ("confidence", "boundary_uncertainty", "mask_area_fraction", "connected_components", "colour_distance")}
    return {
        "task_key": f"{batch}:{item['image_id']}:{key}",
        "batch": batch,
        "image_id": item["image_id"],
        "kind": kind,
        "slot": slot,
        "sku": str(item["sku"]),
        "category": str(item["category"]),
        "file": str(item["file"]),
        "image_key": item["image_key"],
        "mask_key": item["mask_key"],
        "composite_key": item["composite_key"],
        "width": int(item["width"]),
        "height": int(item["height"]),
        "reasons": item["reasons"],
        "signals": pd.Series(signals).to_json(),
        "policy_version": item["policy_version"],
        "model_version": str(item["model_version"]),
    }


SIGNAL_FIELDS = ("confidence", "boundary_uncertainty", "mask_area_fraction", "connected_components", "colour_distance")
TASK_COLUMNS = (
    "task_key", "batch", "image_id", "kind", "slot", "sku", "category", "file", "image_key", "mask_key", "composite_key",
    "width", "height", "reasons", "signals", "policy_version", "model_version",
)


def _task_frame(batch: str, items: pd.DataFrame, kind: pd.Series | str, slot: np.ndarray | int, key: pd.Series | str) -> pd.DataFrame:
    """Review task columns for ``items`` (one task per row), built column by column."""
    signals = items[list(SIGNAL_FIELDS)].astype("float64").round(4)
    # One JSON object per row, encoded by pandas in one call (the same text as pd.Series(...).to_json()).
    encoded = signals.to_json(orient="records", lines=True).splitlines() if len(items) else []
    image_id = items["image_id"].astype(str)
    return pd.DataFrame({
        "task_key": (f"{batch}:" + image_id + ":" + key).to_numpy() if isinstance(key, pd.Series) else (f"{batch}:" + image_id + f":{key}").to_numpy(),
        "batch": batch,
        "image_id": items["image_id"].to_numpy(),
        "kind": kind.to_numpy() if isinstance(kind, pd.Series) else kind,
        "slot": slot,
        "sku": items["sku"].astype(str).to_numpy(),
        "category": items["category"].astype(str).to_numpy(),
        "file": items["file"].astype(str).to_numpy(),
        "image_key": items["image_key"].to_numpy(),
        "mask_key": items["mask_key"].to_numpy(),
        "composite_key": items["composite_key"].to_numpy(),
        "width": items["width"].astype("int64").to_numpy(),
        "height": items["height"].astype("int64").to_numpy(),
        "reasons": items["reasons"].to_numpy(),
        "signals": np.asarray(encoded, dtype=object),
        "policy_version": items["policy_version"].to_numpy(),
        "model_version": items["model_version"].astype(str).to_numpy(),
    }, columns=list(TASK_COLUMNS))


def review_task_rows(batch: str, queue: pd.DataFrame) -> list[dict]:
    """Review tasks for a routed batch: escalated and audit items, two slots for double review, hidden gold checks.

    A gold item (``gold`` column, see :func:`mark_gold`) gets one more task of kind ``gold``
    (slot 2): to the reviewer it looks like an audit; its answer is scored against the known truth.
    Vectorised (one pass per column, no per-row Python beyond the final records): a routed batch
    of a million images becomes its tasks in seconds.
    """
    wanted = queue[(queue["route"] == "escalate") | queue["audit"].astype(bool)]
    copies = np.where(wanted["double_review"].astype(bool).to_numpy(), 2, 1)
    repeated = wanted.iloc[np.repeat(np.arange(len(wanted)), copies)].reset_index(drop=True)
    # slot 0, 1 of each item in turn (the first copy of an item is slot 0)
    slot = np.arange(len(repeated)) - np.repeat(np.cumsum(copies) - copies, copies)
    kind = pd.Series(np.where(repeated["route"].to_numpy() == "escalate", "escalation", "audit"), dtype=object)
    frames = [_task_frame(batch, repeated, kind, slot.astype("int64"), pd.Series(slot.astype(str), dtype=object))]
    if "gold" in queue.columns:
        gold = queue[queue["gold"].fillna(False).astype(bool)].reset_index(drop=True)
        frames.append(_task_frame(batch, gold, GOLD_KIND, GOLD_SLOT, GOLD_KIND))
    tasks = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return _records(tasks)


def _records(frame: pd.DataFrame) -> list[dict]:
    """``frame.to_dict("records")`` with plain Python values, column by column.

    pandas' own ``to_dict`` boxes every cell one at a time (and iterates Arrow-backed string
    columns element by element): several times slower for the hundreds of thousands of tasks
    a catalog-scale batch routes to people.
    """
    columns = list(frame.columns)
    values = [frame[name].to_numpy(dtype=object).tolist() for name in columns]
    return [dict(zip(columns, row)) for row in zip(*values)]


def gold_truth(object_store: ObjectStore, batch: str) -> pd.DataFrame:
    """Images whose true mask is known from an earlier batch's review: the correction dataset's gold split.

    Columns ``image_id`` and ``truth_mask_key``; empty before the first correction dataset.
    Items reviewed in ``batch`` itself are left out (a re-scored batch must not check people
    against their own answers).
    """
    try:
        dataset = read_table(object_store, "correction_dataset")
    except FileNotFoundError:
        return pd.DataFrame({"image_id": pd.Series(dtype=str), "truth_mask_key": pd.Series(dtype=str)})
    gold = dataset[(dataset["split"] == "gold") & (dataset["batch"].astype(str) != batch)]
    return gold.drop_duplicates("image_id", keep="last")[["image_id", "mask_key"]].rename(columns={"mask_key": "truth_mask_key"})


def mark_gold(queue: pd.DataFrame, truth: pd.DataFrame, gold_check_rate: float) -> pd.DataFrame:
    """Columns ``gold`` and ``gold_truth_key``: known-truth items that no person would otherwise see.

    An item is a gold check when its image has a known truth mask, the policy auto-approves it
    without an audit, and its stable hash draw is under ``gold_check_rate``. Known-truth items
    that are escalated or audited need no extra task: the metrics score those reviews against
    the truth as they are.
    """
    queue = queue.copy(deep=False)  # only new columns are assigned: the caller's frame is left as it was
    candidate = queue["route"].eq("auto_approve").to_numpy(dtype=bool) & ~queue["audit"].astype(bool).to_numpy()
    if len(truth):
        candidate &= contains(queue["image_id"], truth["image_id"])
    else:
        candidate[:] = False
    # the hash draw only for the few known-truth candidates (the same number per id as drawing for all)
    where = np.flatnonzero(candidate)
    gold = np.zeros(len(queue), dtype=bool)
    if len(where):
        gold[where] = sample_uniform(queue["image_id"].iloc[where], "gold") < gold_check_rate
    keys = np.full(len(queue), "", dtype=object)
    chosen = np.flatnonzero(gold)
    if len(chosen):
        at = positions(queue["image_id"].iloc[chosen], truth["image_id"], last=True)
        keys[chosen] = truth["truth_mask_key"].fillna("").astype(str).to_numpy(dtype=object)[at]
    queue["gold"] = gold
    queue["gold_truth_key"] = pd.Series(keys, index=queue.index, dtype=object).astype(str)
    return queue


@dg.asset(
    partitions_def=batches,
    group_name="routing",
    check_specs=[dg.AssetCheckSpec("every_item_routed", asset="review_queue", description="Each AI output got a route, escalations carry reason codes, and the policy version is recorded.")],
)
def review_queue(context: dg.AssetExecutionContext, ai_outputs: pd.DataFrame, tolerance_policy: TolerancePolicy, object_store: ObjectStore):
    """Auto-approve or escalate each image under the YAML tolerance policy; audit, double-review and hidden gold samples chosen here."""
    policy = tolerance_policy.load()
    try:  # a re-run after a new champion: what the previous model escalated and this one does not is 'rescored'
        previous = read_table(object_store, "review_queue", context.partition_key)
    except FileNotFoundError:
        previous = None
    queue = mark_rescored(previous, route(ai_outputs, policy))
    queue = mark_gold(queue, gold_truth(object_store, context.partition_key), policy.gold_check_rate)
    escalated = queue["route"] == "escalate"
    reasons = reason_counts(queue.loc[escalated, "reasons"])
    yield dg.Output(
        queue,
        metadata={
            "policy": policy.name,
            "policy_version": policy.version,
            "images": len(queue),
            "auto_approved": int((~escalated).sum()),
            "escalated": int(escalated.sum()),
            "automation_rate": float((~escalated).mean()) if len(queue) else 0.0,
            "audit_items": int(queue["audit"].sum()),
            "double_review_items": int(queue["double_review"].sum()),
            "gold_checks": int(queue["gold"].sum()),
            "rescored": int(queue["rescored"].sum()),
            "escalation_reasons": dg.MetadataValue.json(reasons),
        },
    )
    yield dg.AssetCheckResult(
        check_name="every_item_routed",
        passed=bool(
            len(queue) == len(ai_outputs)
            and queue["route"].isin(["auto_approve", "escalate"]).all()
            and (queue.loc[escalated, "reasons"] != "").all()
            and (queue["policy_version"] == policy.version).all()
        ),
    )
