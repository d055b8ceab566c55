"""The ``hitl`` command line: seed a synthetic catalog, run the demo loop, replay reviewers."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import click

REPO_ROOT = Path(__file__).resolve().parent.parent


def prepare_environment() -> Path:
    """Resolve HITL_HOME (default ./.hitl) and DAGSTER_HOME (default HITL_HOME/dagster_home) before Dagster loads."""
    home = Path(os.environ.setdefault("HITL_HOME", str(Path(".hitl").resolve()))).resolve()
    os.environ["HITL_HOME"] = str(home)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home"))).resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", instance_yaml)
    return home


def clear_home(home: Path) -> None:
    """Start from nothing, except a running production-like stack's own folder (``make stack``)."""
    if not home.exists():
        return
    for child in home.iterdir():
        if child.name == "stack":
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


@click.group()
def main() -> None:
    """Human-in-the-loop product imagery: AI cut-outs, tolerance routing, review, retraining."""


@main.command()
@click.option("--n", "count", default=200, show_default=True, help="How many products to generate.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write images/, masks/ and catalog.csv into.")
@click.option("--seed", default=0, show_default=True, help="Catalog seed: the same seed gives the same catalog.")
@click.option("--max-side", default=512, show_default=True, help="Longer side of each image in pixels.")
def seed(count: int, out_dir: str, seed: int, max_side: int) -> None:
    """Write a deterministic synthetic product catalog with exact masks."""
    from ml.synthetic import write_catalog

    frame = write_catalog(out_dir, count, seed=seed, max_side=max_side)
    click.echo(f"wrote {len(frame)} images to {Path(out_dir) / 'images'}, masks to {Path(out_dir) / 'masks'}, catalog {Path(out_dir) / 'catalog.csv'}")
    click.echo(frame["category"].value_counts().to_string())


def demo_training_config(fast: bool) -> dict:
    """Training budget for the demo: enough to show the loop learning within minutes on 2 CPU cores.

    The nightly defaults (``TrainingConfig``) train the U-Net for half an hour; in the demo's few
    minutes LRASPP is ahead, so the demo names it. The demo and the tests train in the main
    process in the default memory format, and fine-tune at the learning rate and on the synthetic
    replay the README's demo figures were measured with, and serve at the size they train at; the
    nightly run's settings were not measured on budgets of seconds.
    """
    from ml.model import LRASPP

    as_measured = {"channels_last": False, "loader_workers": 0, "fine_tune_learning_rate": 5e-4, "inference_scale": 1.0}
    if fast:
        config = {"input_size": 96, "architecture": LRASPP, "bootstrap_images": 24, "bootstrap_seconds": 8.0, "fine_tune_seconds": 5.0, "max_epochs": 2, "synthetic_replay_images": 8, "synthetic_gold_images": 8, "min_gold_images": 4, **as_measured}
    else:
        config = {"input_size": 192, "architecture": LRASPP, "bootstrap_images": 240, "bootstrap_seconds": 150.0, "fine_tune_seconds": 80.0, "max_epochs": 12, "patience": 3, "synthetic_replay_images": 48, **as_measured}
    return {"ops": {"segmentation_model": {"config": config}}}


def nightly_training_config() -> dict:
    """Run config that trains as the nightly schedule does: ``TrainingConfig``'s own defaults."""
    return {"ops": {"segmentation_model": {"config": {}}}}


@main.command()
@click.option("--rounds", default=3, show_default=True, help="Turns of the loop.")
@click.option("--images", "images_per_round", default=120, show_default=True, help="Images in each round's batch.")
@click.option("--seed", default=0, show_default=True)
@click.option("--keep/--fresh", default=False, help="Keep an existing .hitl (default: start from nothing).")
@click.option("--fast", is_flag=True, help="Tiny model budget, for tests: the loop runs but learns little.")
def demo(rounds: int, images_per_round: int, seed: int, keep: bool, fast: bool) -> None:
    """Seed a synthetic catalog into the inbox and run the loop through Dagster, round after round."""
    home = Path(os.environ.get("HITL_HOME", ".hitl")).resolve()
    if not keep:
        clear_home(home)
    home = prepare_environment()
    import dagster as dg

    from hitl_assets.definitions import build_definitions
    from hitl_assets.loop import LoopRunner, ensure_champion, format_table, run_round
    from ml.reviewer import ReplayConfig
    from ml.synthetic import write_catalog

    started = time.perf_counter()
    runner = LoopRunner(build_definitions(), dg.DagsterInstance.get(), home / "sensor_cursors.json", run_config={"retrain_job": demo_training_config(fast)})
    click.echo(f"HITL_HOME={home}")
    click.echo("bootstrapping the first champion on the synthetic catalog (retrain_job) ...")
    ensure_champion(runner)
    rows = []
    for round_number in range(1, rounds + 1):
        batch = f"demo-round-{round_number}"
        catalog_dir = home / "demo" / batch
        write_catalog(catalog_dir, images_per_round, seed=seed * 1000 + round_number, max_side=256 if fast else 512)
        click.echo(f"round {round_number}: {images_per_round} images into the inbox as batch {batch} ...")
        row = run_round(runner, round_number, batch, catalog_dir / "images", catalog_dir / "masks", catalog_dir / "catalog.csv", ReplayConfig(seed=seed + round_number))
        rows.append(row)
        click.echo(f"round {round_number} done after {time.perf_counter() - started:.0f} s: {json.dumps(row)}")
    summary = [{k: row[k] for k in ("round", "images", "automation_rate", "correction_rate", "gold_iou", "model_version")} for row in rows]
    (home / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    click.echo("")
    click.echo(format_table(summary))
    click.echo("")
    click.echo(f"finished in {time.perf_counter() - started:.0f} s; summary in {home / 'demo_summary.json'}")
    click.echo(f"Dagster UI:   DAGSTER_HOME={os.environ['DAGSTER_HOME']} HITL_HOME={home} .venv/bin/dagster dev   (http://127.0.0.1:3000)")
    click.echo(f"MLflow UI:    .venv/bin/mlflow ui --backend-store-uri sqlite:///{home / 'mlflow.db'}   (http://127.0.0.1:5000)")
    click.echo(f"Review store: sqlite3 {home / 'review.db'}   (tables review_tasks, review_events)")
    click.echo(f"Published:    {home / 'objects' / 'published'}")


@main.command()
@click.option("--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Your labelled images.")
@click.option("--masks", "masks_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Their ground-truth masks, same base names.")
@click.option("--rounds", default=3, show_default=True, help="The images are split into this many batches, one per round.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="JSON file for the per-round results.")
@click.option("--catalog", "catalog_csv", default=None, type=click.Path(exists=True, dir_okay=False), help="Optional CSV with file,sku,category.")
@click.option("--seed", default=0, show_default=True, help="Seed for the split into rounds and for the replayed reviewer.")
@click.option("--error-rate", default=0.0, show_default=True, help="Share of decisions the replayed reviewer gets wrong.")
@click.option("--keep/--fresh", default=False, help="Keep an existing HITL_HOME (default: start from nothing).")
@click.option("--fast", is_flag=True, help="Tiny training budget, for tests: the loop runs but learns little.")
@click.option("--nightly", is_flag=True, help="Train as the nightly schedule does (TrainingConfig's defaults: a half-hour U-Net bootstrap, ten-minute fine-tunes) instead of the demo's minutes.")
def replay(images_dir: str, masks_dir: str, rounds: int, out_file: str, catalog_csv: str | None, seed: int, error_rate: float, keep: bool, fast: bool, nightly: bool) -> None:
    """Run the loop on your own labelled images, with the replayed reviewer, round after round."""
    import random
    import tempfile

    if fast and nightly:
        raise click.UsageError("--fast and --nightly are two different training budgets: choose one")

    home = Path(os.environ.get("HITL_HOME", ".hitl")).resolve()
    if not keep:
        clear_home(home)
    home = prepare_environment()
    import dagster as dg

    from hitl_assets.definitions import build_definitions
    from hitl_assets.loop import LoopRunner, ensure_champion, format_table, run_round
    from ml.reviewer import ReplayConfig

    files = sorted(p for p in Path(images_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) < rounds:
        raise click.UsageError(f"{images_dir} holds {len(files)} file(s): too few for {rounds} rounds")
    random.Random(seed).shuffle(files)
    training = nightly_training_config() if nightly else demo_training_config(fast)
    runner = LoopRunner(build_definitions(), dg.DagsterInstance.get(), home / "sensor_cursors.json", run_config={"retrain_job": training})
    click.echo(f"HITL_HOME={home}: {len(files)} images in {rounds} rounds" + (" (nightly training budget)" if nightly else ""))
    ensure_champion(runner)
    rows = []
    with tempfile.TemporaryDirectory() as staging:
        for round_number in range(1, rounds + 1):
            chunk = files[round_number - 1 :: rounds]
            folder = Path(staging) / f"round-{round_number}"
            folder.mkdir()
            for path in chunk:
                shutil.copy(path, folder / path.name)
            row = run_round(runner, round_number, f"replay-round-{round_number}", folder, Path(masks_dir), Path(catalog_csv) if catalog_csv else None, ReplayConfig(seed=seed + round_number, error_rate=error_rate))
            rows.append({k: row[k] for k in ("round", "gold_iou", "automation_rate", "correction_rate", "fn_rate", "model_version")})
            click.echo(json.dumps(rows[-1]))
    Path(out_file).write_text(json.dumps(rows, indent=2))
    click.echo(format_table(rows, ["round", "gold_iou", "automation_rate", "correction_rate", "fn_rate", "model_version"]))
    click.echo(f"wrote {out_file}")


@main.command()
@click.argument("version")
@click.option("--reason", default="promoted by hand", show_default=True, help="Why: recorded with the change.")
def promote(version: str, reason: str) -> None:
    """Make VERSION the champion (recorded in the registry with who and why)."""
    prepare_environment()
    from resources import ModelRegistry

    previous = ModelRegistry.from_env().promote(version, reason, actor=_actor())
    click.echo(f"champion: v{version} (was v{previous or 'none'})")


@main.command()
@click.option("--reason", default="rolled back by hand", show_default=True, help="Why: recorded with the change.")
def rollback(reason: str) -> None:
    """Give the champion alias back to the version the current champion replaced (recorded)."""
    prepare_environment()
    from resources import ModelRegistry

    try:
        was, now = ModelRegistry.from_env().rollback(reason, actor=_actor())
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"champion: v{now} (rolled back from v{was})")


@main.command()
def models() -> None:
    """Registered model versions: gold IoU, promotion outcome and reason, and which is champion."""
    prepare_environment()
    from resources import ModelRegistry

    registry = ModelRegistry.from_env()
    champion = registry.champion_version()
    versions = registry.client().search_model_versions(f"name='{registry.model_name}'")
    for version in sorted(versions, key=lambda v: int(v.version)):
        tags = version.tags or {}
        marker = "*" if champion is not None and str(champion.version) == str(version.version) else " "
        click.echo(f"{marker} v{version.version:<4} gold_iou={tags.get('gold_iou', '?'):<9} {tags.get('promotion', '?'):<9} {tags.get('promotion_reason', '')}")


def _actor() -> str:
    return os.environ.get("HITL_ACTOR") or os.environ.get("USER") or "unknown"


@main.command("replay-reviewer")
@click.option("--masks", "masks_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Ground-truth masks, named like the images.")
@click.option("--batch", default=None, help="Only this batch's tasks (default: every open task).")
@click.option("--iou-threshold", default=0.92, show_default=True, help="Approve when the AI mask's IoU with the truth is at least this.")
@click.option("--seconds-per-item", default=6.0, show_default=True, help="Mean seconds recorded per decision.")
@click.option("--error-rate", default=0.0, show_default=True, help="Share of decisions the reviewer gets wrong.")
@click.option("--seed", default=0, show_default=True)
def replay_reviewer(masks_dir: str, batch: str | None, iou_threshold: float, seconds_per_item: float, error_rate: float, seed: int) -> None:
    """Answer open review tasks from ground-truth masks, as a reviewer would."""
    prepare_environment()
    from hitl_assets.replay import replay_reviews
    from ml.reviewer import ReplayConfig
    from resources import ObjectStore, ReviewStore

    config = ReplayConfig(iou_threshold=iou_threshold, seconds_per_item=seconds_per_item, error_rate=error_rate, seed=seed)
    summary = replay_reviews(ReviewStore.from_env(), ObjectStore.from_env(), masks_dir, config, batch=batch)
    click.echo(f"decided {summary.decided} task(s): {json.dumps(summary.by_decision)}")
    if summary.missing_truth:
        click.echo(f"no ground truth for {len(summary.missing_truth)} image(s), rejected: {', '.join(summary.missing_truth[:10])}", err=True)


from hitl_assets.policy_cli import policy  # noqa: E402
main.add_command(policy)
from hitl_assets.review_cli import review, user  # noqa: E402
main.add_command(review); main.add_command(user)
import hitl_assets.ingest_cli  # noqa: E402,F401  (registers `hitl ingest`)


if __name__ == "__main__":
    sys.exit(main())
