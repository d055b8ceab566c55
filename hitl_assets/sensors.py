"""Sensors: new inbox folders become batches, escalations become review tasks, finished reviews get published."""

import hashlib
import json

import dagster as dg

from hitl_assets.assets.routing import review_task_rows
from hitl_assets.jobs import ingest_job, review_complete_job
from hitl_assets.partitions import INBOX_PREFIX, batches, is_valid_batch_name
from resources.model_registry import ModelRegistry
from resources.object_store import ObjectStore
from resources.review_store import ReviewStore
from resources.tables import read_table


# Names upload tools give a file while it is still being written: a folder holding one is still arriving.
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".uploading", ".filepart", ".tmp")


def folder_signature(store: ObjectStore, batch: str) -> str:
    """Every file's name and size, and the newest change: equal on two ticks means the upload has finished.

    Per-file sizes (not just the total) so that a file still growing while another shrinks is not
    mistaken for a finished folder; a folder holding an upload tool's temporary file is never ready.
    """
    entries = store.list(f"{INBOX_PREFIX}/{batch}/")
    if not entries:
        return ""
    if any(e.key.lower().endswith(IN_PROGRESS_SUFFIXES) for e in entries):
        return ""
    sizes = hashlib.sha256("\n".join(f"{e.key}\t{e.size}" for e in entries).encode()).hexdigest()[:16]
    return f"{len(entries)}:{sum(e.size for e in entries)}:{max(e.modified for e in entries):.3f}:{sizes}"


def loose_files(store: ObjectStore) -> list[str]:
    """Files directly under the inbox, outside any batch folder: never ingested (a batch is a folder)."""
    return [e.key for e in store.list(f"{INBOX_PREFIX}/") if e.key.count("/") == 1]


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def inbox_sensor(context: dg.SensorEvaluationContext, object_store: ObjectStore) -> dg.SensorResult | dg.SkipReason:
    """A new folder under the inbox becomes a ``batches`` partition and an ingest run, once its files stop changing."""
    state = json.loads(context.cursor) if context.cursor else {"pending": {}}
    known = set(context.instance.get_dynamic_partitions(batches.name))
    pending: dict[str, str] = state.get("pending", {})
    ready, waiting = [], {}
    for folder in object_store.list_folders(INBOX_PREFIX):
        if folder in known:
            continue
        if not is_valid_batch_name(folder):
            context.log.warning(f"inbox folder {folder!r} skipped: batch names use letters, digits, '.', '_' and '-' only")
            continue
        signature = folder_signature(object_store, folder)
        if signature and pending.get(folder) == signature:
            ready.append(folder)
        elif signature:
            waiting[folder] = signature
    loose = loose_files(object_store)
    if loose:
        context.log.warning(f"{len(loose)} file(s) directly in {INBOX_PREFIX}/ are not in a batch folder and are not ingested: {', '.join(loose[:5])}")
    cursor = json.dumps({"pending": waiting})
    if not ready:
        return dg.SensorResult(skip_reason=f"{len(waiting)} folder(s) still arriving" if waiting else "no new inbox folders", cursor=cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=b, run_key=f"ingest:{b}", tags={"hitl/batch": b, "hitl/source": "inbox"}) for b in ready],
        dynamic_partitions_requests=[batches.build_add_request(ready)],
        cursor=cursor,
    )


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def review_task_sensor(context: dg.SensorEvaluationContext, object_store: ObjectStore, review_store: ReviewStore) -> dg.SensorResult:
    """Escalated and audit items of each newly routed batch become review tasks: this is how people are pulled in."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("review_queue"), after_storage_id=after), limit=100, ascending=True
    ).records
    created, closed, cursor = 0, 0, after
    for record in records:
        batch = record.partition_key
        try:
            queue = read_table(object_store, "review_queue", batch)
        except FileNotFoundError:
            context.log.warning(f"review_queue for batch {batch!r} was materialized but its table is gone")
        else:
            created += review_store.create_tasks(review_task_rows(batch, queue))
            closed += close_settled_tasks(review_store, batch, queue)
        cursor = record.storage_id
    message = f"created {created} and closed {closed} review task(s) from {len(records)} routed batch(es)" if records else "no newly routed batches"
    context.log.info(message)
    return dg.SensorResult(skip_reason=message, cursor=str(cursor) if cursor is not None else None)


def close_settled_tasks(review_store: ReviewStore, batch: str, queue) -> int:
    """Open tasks whose image no longer needs a person (re-scored within tolerance by a new champion) are closed."""
    needs = set(queue.loc[(queue["route"] == "escalate") | queue["audit"].astype(bool) | gold_checks(queue), "image_id"])
    waiting = review_store.tasks(batch=batch)
    waiting = waiting[waiting["status"].isin(["open", "claimed"]) & ~waiting["image_id"].isin(needs)]
    return review_store.close_tasks(waiting["id"].tolist(), "rescored") if len(waiting) else 0


def gold_checks(queue):
    """Items given a hidden gold check (known truth), as a boolean Series; none in queues routed before gold checks existed."""
    return queue["gold"].astype(bool) if "gold" in queue.columns else queue["image_id"].isna() & False


def expected_task_count(queue) -> int:
    """How many review tasks a routed batch should have (escalations and audits, two for double review, plus gold checks)."""
    needs = (queue["route"] == "escalate") | queue["audit"].astype(bool)
    return int((needs.astype(int) * (1 + queue["double_review"].astype(int))).sum() + gold_checks(queue).sum())


@dg.sensor(job=review_complete_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def review_completion_sensor(context: dg.SensorEvaluationContext, object_store: ObjectStore, review_store: ReviewStore) -> dg.SensorResult | dg.SkipReason:
    """A batch whose review tasks are all decided triggers review_decisions and published_images."""
    done: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    progress = review_store.batch_progress().set_index("batch")
    requests = []
    for batch in context.instance.get_dynamic_partitions(batches.name):
        try:
            queue = read_table(object_store, "review_queue", batch)
        except FileNotFoundError:
            continue  # not routed yet
        expected = expected_task_count(queue)
        total = int(progress.loc[batch, "total"]) if batch in progress.index else 0
        pending = int(progress.loc[batch, "pending"]) if batch in progress.index else 0
        if total < expected or pending:
            continue  # tasks not created yet, or people still working
        decided = int(progress.loc[batch, "decided"]) if batch in progress.index else 0
        signature = f"{len(queue)}:{total}:{decided}"
        if done.get(batch) == signature:
            continue
        done[batch] = signature
        requests.append(dg.RunRequest(partition_key=batch, run_key=f"review-complete:{batch}:{signature}", tags={"hitl/batch": batch}))
    if not requests:
        return dg.SensorResult(skip_reason="no newly completed batches", cursor=json.dumps(done))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(done))


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def rescore_sensor(context: dg.SensorEvaluationContext, review_store: ReviewStore, model_registry: ModelRegistry) -> dg.SensorResult:
    """When the champion changes (promotion, ``hitl promote`` or ``hitl rollback``), batches with items still
    waiting for review are re-scored by it; items now within tolerance are auto-approved as ``rescored``."""
    champion = model_registry.champion_version()
    version = str(champion.version) if champion is not None else ""
    if context.cursor is None or context.cursor == version:
        return dg.SensorResult(skip_reason=f"champion unchanged (v{version or 'none'})", cursor=version)
    progress = review_store.batch_progress()
    waiting = progress.loc[progress["pending"] > 0, "batch"].tolist() if len(progress) else []
    if not waiting:
        return dg.SensorResult(skip_reason=f"champion v{version}: no batch has items waiting for review", cursor=version)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=batch, run_key=f"rescore:{batch}:v{version}", asset_selection=[dg.AssetKey("ai_outputs"), dg.AssetKey("review_queue")],
                tags={"hitl/batch": batch, "hitl/rescore": version},
            )
            for batch in waiting
        ],
        cursor=version,
    )
