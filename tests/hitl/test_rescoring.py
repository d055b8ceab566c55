"""A new champion re-scores what is still waiting for people; human decisions are never overridden."""

import dagster as dg
import mlflow
import yaml

from hitl_assets.cli import demo_training_config
from hitl_assets.definitions import build_definitions
from hitl_assets.loop import LoopRunner, drop_into_inbox, ensure_champion
from ml.policy import default_policy_path
from ml.synthetic import write_catalog
from resources import TolerancePolicy
from resources.tables import read_table


def write_policy(path, **defaults):
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["defaults"].update(defaults)
    policy["categories"] = {}
    policy["audit_rate"] = 0.0
    policy["double_review_rate"] = 0.0
    path.write_text(yaml.safe_dump(policy))


def test_promotion_rescores_pending_items_and_keeps_human_decisions(tmp_path, hitl_resources, instance):
    policy_file = tmp_path / "policy.yaml"
    write_policy(policy_file, min_confidence=1.0, max_boundary_uncertainty=0.0)  # escalate everything
    resources = {**hitl_resources, "tolerance_policy": TolerancePolicy(path=str(policy_file))}
    runner = LoopRunner(build_definitions(resources), instance, tmp_path / "cursors.json", run_config={"retrain_job": demo_training_config(fast=True)})
    store, reviews, registry = resources["object_store"], resources["review_store"], resources["model_registry"]
    ensure_champion(runner)
    runner.tick("rescore_sensor")  # remembers champion v1

    write_catalog(tmp_path / "cat", 6, seed=11, max_side=128)
    drop_into_inbox(runner, tmp_path / "cat" / "images", "b1")
    runner.tick("inbox_sensor")
    assert runner.tick("inbox_sensor")
    runner.tick("review_task_sensor")
    tasks = reviews.tasks(batch="b1")
    assert len(tasks) == 6 and (tasks["status"] == "open").all()
    (first,) = reviews.claim("ann", 1)
    reviews.record_decision(first.id, "ann", "reject", seconds=3.0, note="wrong product")

    # A new champion arrives (here promoted by hand) while the policy has been loosened.
    write_policy(policy_file, min_confidence=0.0, max_boundary_uncertainty=1.0, min_area_fraction=0.0, max_area_fraction=1.0, max_components=1000, max_colour_distance=1000.0)
    champion = registry.load_champion()
    registry.activate()
    with mlflow.start_run():
        version = registry.log_model(champion.model, champion.input_size, tags={"gold_iou": "0.5"})
    registry.promote(version, "test", actor="tester")
    runs = runner.tick("rescore_sensor")
    assert len(runs) == 1 and runs[0].tags["hitl/rescore"] == version
    runner.tick("review_task_sensor")

    queue = read_table(store, "review_queue", "b1")
    assert (queue["route"] == "auto_approve").all() and (queue["model_version"] == version).all()
    assert set(queue.loc[queue["rescored"], "reasons"]) == {"rescored"}
    tasks = reviews.tasks(batch="b1").set_index("image_id")
    assert tasks.loc[first.image_id, "status"] == "decided"
    others = tasks.drop(index=first.image_id)
    assert (others["status"] == "closed").all() and (others["closed_reason"] == "rescored").all()

    # The batch is now complete: it is published, without the image a person rejected.
    assert runner.tick("review_completion_sensor")
    published = read_table(store, "published_images", "b1").set_index("image_id")
    assert published.loc[first.image_id, "final_status"] == "rejected"
    assert (published.drop(index=first.image_id)["final_status"] == "approved_auto").all()
    assert len(store.list("published/b1/")) == 5
    assert all(run.is_success for run in instance.get_runs())
