"""``hitl ingest DIR``: submit a folder as a batch through Dagster, exactly as the inbox sensor would.

The folder's files are copied into ``inbox/<batch>/`` in the object store, the inbox sensor is
evaluated (twice: the first tick remembers the folder's signature, the second sees it unchanged)
and the ingest run it requests (``raw_images`` -> ``ai_outputs`` -> ``review_queue``) is executed
in-process against the Dagster instance, so the batch shows up in the Dagster UI like any other.

The JSON report lists ``accepted`` files (with their content-hash ``image_id``; the same content
under two names is kept once and both names are listed with the same id) and ``quarantined``
files with the ``reason`` they were refused. Files this command refuses before they reach the
inbox (symbolic links leading out of DIR, sockets and pipes, names a key cannot hold) are
quarantined with a reason too. Exit status 0 when the batch ran, even with files quarantined;
1 with a message naming the problem when it could not run.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import click

from hitl_assets.cli import main, prepare_environment

HIDDEN_PREFIXES = (".",)


def default_batch_name(folder: Path) -> str:
    """DIR's name, made a valid batch name (letters, digits, '.', '_' and '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name).strip("-.") or "batch"
    return name[:100]


def collect(folder: Path) -> tuple[list[tuple[str, Path]], list[dict]]:
    """The regular files under ``folder`` (relative name, path) and the entries refused before ingest.

    Symbolic links are followed only when they stay inside ``folder``; sockets, pipes and devices
    are never opened (reading a pipe would block forever). Hidden files and folders are skipped.
    """
    from resources.object_store import InvalidKeyError, validate_key

    root = Path(os.path.realpath(folder))
    files: list[tuple[str, Path]] = []
    refused: list[dict] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            if name.startswith(HIDDEN_PREFIXES):
                continue
            if (here / name).is_symlink():  # os.walk never descends into linked folders; say so
                refused.append({"file": (here / name).relative_to(folder).as_posix(), "reason": "symlink_outside_inbox",
                                "detail": "symbolic link to a folder; refused and not followed"})
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith(HIDDEN_PREFIXES):
                continue
            path = here / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                if root not in target.parents:
                    refused.append({"file": relative, "reason": "symlink_outside_inbox",
                                    "detail": "symbolic link pointing outside the submitted folder; refused and not followed"})
                    continue
            try:
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                refused.append({"file": relative, "reason": "vanished", "detail": "the file disappeared between listing and reading"})
                continue
            if not stat.S_ISREG(mode):
                refused.append({"file": relative, "reason": "not_a_regular_file", "detail": "a pipe, socket or device, not a file; not opened"})
                continue
            try:
                validate_key(f"inbox/batch/{relative}")
            except InvalidKeyError:
                refused.append({"file": relative, "reason": "invalid_name", "detail": "the name cannot be stored as an object key"})
                continue
            files.append((relative, path))
    return files, refused


def build_report(batch: str, raw, refused: list[dict]) -> dict:
    """The report's ``accepted`` and ``quarantined`` lists from the raw_images table."""
    accepted, quarantined = [], []
    for row in raw.to_dict("records"):
        if row["status"] == "accepted":
            accepted.append({"file": row["file"], "image_id": row["image_id"]})
            for other in filter(None, str(row.get("also_named") or "").split(";")):
                accepted.append({"file": other, "image_id": row["image_id"], "duplicate_of": row["file"]})
        else:
            quarantined.append({"file": row["file"], "reason": row["reason"], "detail": row["detail"]})
    quarantined += refused
    return {
        "batch": batch,
        "accepted": sorted(accepted, key=lambda r: r["file"]),
        "quarantined": sorted(quarantined, key=lambda r: r["file"]),
    }


def _failure_message(err: BaseException) -> str:
    """The user-facing message of a failed run: a dg.Failure's description, or the underlying error."""
    inner = getattr(err, "user_exception", None) or err
    message = getattr(inner, "description", None) or str(inner) or type(inner).__name__
    return message.strip().splitlines()[0] if message.strip() else type(inner).__name__


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--batch", "batch_name", default=None, help="Batch (partition) name; default: the folder's name made safe.")
@click.option("--report", "report_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the JSON report (default $HITL_HOME/reports/ingest-<batch>.json).")
def ingest(folder: Path, batch_name: str | None, report_file: Path | None) -> None:
    """Submit FOLDER as a batch through Dagster, as the inbox sensor would, up to and including review_queue."""
    home = prepare_environment()
    import dagster as dg

    from hitl_assets.definitions import build_definitions
    from hitl_assets.loop import LoopRunner
    from hitl_assets.partitions import INBOX_PREFIX, batches, is_valid_batch_name
    from resources.tables import read_table

    batch = batch_name or default_batch_name(folder)
    if not is_valid_batch_name(batch):
        raise click.UsageError(f"batch name {batch!r}: use letters, digits, '.', '_' and '-' only (at most 100)")
    report_path = report_file or home / "reports" / f"ingest-{batch}.json"
    runner = LoopRunner(build_definitions(), dg.DagsterInstance.get(), home / "sensor_cursors.json")
    store = runner.resource("object_store")
    if batch in runner.instance.get_dynamic_partitions(batches.name):
        raise click.ClickException(f"batch {batch!r} already exists (it was ingested before); choose another name with --batch")

    files, refused = collect(folder)
    if not files:
        raise click.ClickException(f"{folder}: no files to ingest" + (f" ({len(refused)} refused)" if refused else ""))
    prefix = f"{INBOX_PREFIX}/{batch}"
    copied = 0
    for relative, path in files:
        try:
            store.put_file(f"{prefix}/{relative}", path)
            copied += 1
        except FileNotFoundError:
            refused.append({"file": relative, "reason": "vanished", "detail": "the file disappeared between listing and reading"})
    for row in refused:
        store.put_bytes(f"quarantine/{batch}/{row['file']}.reason.json", json.dumps(row).encode())
    if not copied:
        raise click.ClickException(f"{folder}: every file was refused before ingest")
    click.echo(f"batch {batch}: {copied} file(s) copied to {store.describe()}/{prefix}/")

    error = None
    runs = []
    try:
        for _ in range(3):  # first sight, then unchanged: the sensor starts the run (a third tick if something still moved)
            runs += runner.tick("inbox_sensor")
            if batch in runner.instance.get_dynamic_partitions(batches.name):
                break
        if batch not in runner.instance.get_dynamic_partitions(batches.name):
            error = "the inbox sensor did not start a run for it (its folder kept changing)"
    except Exception as err:  # a failed run: say why, non-zero exit
        error = f"the ingest run failed: {_failure_message(err)}"

    report: dict = {"batch": batch, "accepted": [], "quarantined": list(refused)}
    try:
        report = build_report(batch, read_table(store, "raw_images", batch), refused)
    except FileNotFoundError:
        pass  # raw_images did not complete: the report lists what was refused before ingest
    ours = [r for r in runs if r.tags.get("hitl/batch") == batch]
    report["run_id"] = ours[0].run_id if ours else None
    report["status"] = "failed" if error else "completed"
    if error:
        report["error"] = error
    else:
        queue = read_table(store, "review_queue", batch)
        report["review_queue"] = {str(k): int(v) for k, v in queue["route"].value_counts().items()}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    others = sorted({r.tags.get("hitl/batch") for r in runs} - {batch})
    if others:
        click.echo(f"the inbox sensor also started waiting batch(es): {', '.join(others)}")
    if error:
        raise click.ClickException(f"batch {batch!r} could not run: {error} (report: {report_path}; once fixed, re-run the partition from the Dagster UI or ingest again with another --batch)")
    click.echo(
        f"batch {batch}: {len(report['accepted'])} accepted, {len(report['quarantined'])} quarantined; "
        f"routes {json.dumps(report['review_queue'])}; run {report['run_id']}; report {report_path}"
    )
