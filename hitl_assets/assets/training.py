"""segmentation_model: nightly retraining; logs to MLflow and promotes only a model that beats the champion."""

import copy
import time

import dagster as dg
import numpy as np
import pandas as pd

from ml.architectures import UNET
from ml.calibration import cross_validated_probabilities, expected_calibration_error, fit_calibrator, reliability_curve
from ml.grid import prediction_grid
from ml.imageio import decode_mask, load_rgb
from ml.promotion import promotion_decision
from ml.synthetic import generate_catalog
from ml.threshold_fit import review_history as threshold_history
from resources.model_registry import CALIBRATOR_ARTIFACT, ModelRegistry
from resources.object_store import ObjectStore
from resources.review_store import ReviewStore
from resources.tables import read_partitions

# torch, the training code and MLflow are imported in the functions that use them: the code
# location, its sensors and the other assets' step processes load without them (README, "Performance").


def _pyplot():
    """matplotlib's pyplot on the Agg backend (figures are logged to MLflow, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class TrainingConfig(dg.Config):
    """Training and promotion settings; the defaults are the nightly run's on 2 CPU cores.

    A bootstrap (no champion yet) trains the MobileNetV3 U-Net for half an hour on 1,000 synthetic
    images; each night after that fine-tunes the champion for ten minutes. The demo and the tests
    pass smaller budgets and LRASPP (``hitl_assets.cli.demo_training_config``), which is ahead in
    the first few minutes; the U-Net is ahead from about nine minutes on (README, "Learning curve").
    """

    input_size: int = 192
    # The registered model serves at input_size x inference_scale (256 px by default): in ai_outputs,
    # in re-scoring, on the gold set and at the promotion gate. Training crops keep 50-100 % of the
    # frame, so the network learns products about 1.15-1.4x larger than they appear when the whole
    # photo is squeezed into the same input; served at 4/3 of the training size, it sees them at the
    # scale it learned (the train-test resolution discrepancy of Touvron et al., 2019). On the 600
    # photos of the 2026-12-01 nightly learning curve, its champion served at 256 instead of 192 px
    # needed 11.8 % corrections instead of 15.3 %, and automation at 1 % false negatives was
    # 0.75-0.90 per round instead of 0.53-0.77 (README, "Learning curve").
    inference_scale: float = 4 / 3
    # The network a bootstrap builds; fine-tuning keeps the champion's (see ml.model).
    architecture: str = UNET
    batch_size: int = 8
    # The time budgets below end a nightly run; the epoch cap is only a backstop.
    max_epochs: int = 1000
    patience: int = 10
    bootstrap_learning_rate: float = 1e-3
    # A tenth of the bootstrap's: the champion ended its own schedule near zero. At 5e-4 every
    # nightly fine-tune lost 0.009-0.036 gold IoU on it; at 1e-4 they lost 0.002-0.010 and one
    # gained 0.002 (README, "Learning curve", 2026-12-01).
    fine_tune_learning_rate: float = 1e-4
    # Cosine decay over each run's budget (steps or seconds, whichever ends it) with a short warm-up.
    lr_schedule: str = "cosine"
    boundary_weight: float = 0.0
    bootstrap_images: int = 1000
    bootstrap_seconds: float = 1800.0
    fine_tune_seconds: float = 600.0
    # Fresh synthetic images beside the night's corrections (a new slice every night), so that a
    # fine-tune keeps what the corrections do not show and validates on more than a few dozen images.
    synthetic_replay_images: int = 256
    min_gold_images: int = 10
    synthetic_gold_images: int = 40
    validation_fraction: float = 0.15
    promotion_margin: float = 0.0
    category_regression_tolerance: float = 0.03
    grid_samples: int = 6
    seed: int = 0
    device: str = "auto"
    # Speed-ups that leave the results materially the same: the channels_last memory format and
    # augmentation in DataLoader worker processes. U-Net, 2 cores (benchmarks/training_speed.py):
    # 256 s per epoch per 1,000 images at 256 px without them, 176 s with both.
    channels_last: bool = True
    loader_workers: int = 2
    # Automatic mixed precision (ml.train.TrainConfig.mixed_precision): "auto" trains in float16
    # with loss scaling on CUDA and in float32 on the CPU; "off", "float16" or "bfloat16" to force.
    mixed_precision: str = "auto"

    def serving_size(self) -> int:
        """The square input, in pixels, the trained model is registered to serve at."""
        if self.inference_scale <= 0:
            raise ValueError(f"inference_scale must be positive, got {self.inference_scale}")
        return max(1, round(self.input_size * self.inference_scale))


SYNTHETIC_BOOTSTRAP_SEED = 1000
SYNTHETIC_GOLD_SEED = 999


def load_samples(store: ObjectStore, rows: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """The dataset's training-ready images and masks, read from the object store."""
    images, masks = [], []
    for row in rows.itertuples():
        images.append(load_rgb(store.get_bytes(row.sample_image_key), row.sample_image_key))
        masks.append(decode_mask(store.get_bytes(row.sample_mask_key), row.sample_mask_key))
    return images, masks, rows["category"].astype(str).tolist()


def synthetic_samples(n: int, seed: int, max_side: int) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Images, masks and categories from the deterministic synthetic catalog."""
    items = list(generate_catalog(n, seed=seed, max_side=max_side))
    return [i.image for i in items], [i.mask for i in items], [i.category for i in items]


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation index split; validation is at least one sample when there are two or more."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction))) if n >= 2 else 0
    return order[n_val:], order[:n_val]


def review_history(store: ObjectStore, reviews: ReviewStore) -> tuple[pd.DataFrame, np.ndarray]:
    """Quality signals of every reviewed image with its outcome (corrected or rejected = needed correction).

    The same history ``hitl policy fit`` uses: hidden gold checks and verdicts on an older model's mask are left out.
    """
    history = threshold_history(read_partitions(store, "review_queue"), reviews.latest_decisions())
    reviewed = history[history["labelled"]] if len(history) else history
    return reviewed, reviewed["needs_correction"].to_numpy(dtype=bool) if len(reviewed) else np.array([], dtype=bool)


def log_calibration(store: ObjectStore, reviews: ReviewStore) -> dict:
    """Fit the needs-correction calibrator on review history and log it with its reliability curve."""
    import mlflow

    signals, labels = review_history(store, reviews)
    calibrator = fit_calibrator(signals, labels) if len(labels) else None
    if calibrator is None:
        mlflow.set_tag("hitl.calibration", f"skipped: {len(labels)} reviewed items, {int(labels.sum()) if len(labels) else 0} needing correction")
        return {"calibrated": False}
    mlflow.log_text(calibrator.to_json(), CALIBRATOR_ARTIFACT)
    signals_used = "+".join(calibrator.features)
    mlflow.set_tag("hitl.calibration_signals", signals_used)
    # every signal set tried: out-of-fold log loss and confident-end ranking (MLflow keys allow no "+")
    mlflow.log_metrics({f"calibration_oof_log_loss/{name.replace('+', '-')}": loss for name, loss in calibrator.selection.items()})
    mlflow.log_metrics({f"calibration_oof_automation_at_fn_1pct/{name.replace('+', '-')}": share for name, share in calibrator.ranking.items()})
    curve = reliability_curve(cross_validated_probabilities(signals, labels, features=calibrator.features), labels)
    ece = expected_calibration_error(curve)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    axis.plot(curve["mean_predicted"], curve["observed_rate"], marker="o")
    axis.set_xlabel("predicted P(needs correction)")
    axis.set_ylabel("observed correction rate")
    axis.set_title(f"reliability (out-of-fold), ECE {ece:.3f}")
    mlflow.log_figure(figure, "calibration/reliability.png")
    plt.close(figure)
    mlflow.log_text(curve.to_csv(index=False), "calibration/reliability.csv")
    mlflow.log_metrics({"calibration_ece": ece, "calibration_samples": float(len(labels))})
    return {"calibrated": True, "calibration_ece": ece, "calibration_samples": len(labels), "calibration_signals": signals_used}


def log_prediction_grid(champion, challenger, size: int, images, masks, categories, count: int, device) -> None:
    """A PNG of gold samples: image, truth, champion's mask, challenger's mask."""
    import cv2
    import mlflow

    from ml.infer import predict_probabilities

    plt = _pyplot()

    picks = list(range(min(count, len(images))))
    if not picks:
        return
    chosen = [images[i] for i in picks]
    truths = [masks[i] for i in picks]

    def masks_of(model, model_size):
        probs = predict_probabilities(model, chosen, model_size, device=device)
        return [(cv2.resize(p, (t.shape[1], t.shape[0])) >= 0.5).astype(np.uint8) * 255 for p, t in zip(probs, truths)]

    columns = {"challenger": masks_of(challenger, size)}
    if champion is not None:
        columns = {f"champion v{champion.version}": masks_of(champion.model, champion.input_size), **columns}
    figure = prediction_grid(chosen, truths, columns, titles=[categories[i] for i in picks])
    mlflow.log_figure(figure, "prediction_grid.png")
    plt.close(figure)


@dg.asset(group_name="learning")
def segmentation_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    correction_dataset: pd.DataFrame,
    object_store: ObjectStore,
    review_store: ReviewStore,
    model_registry: ModelRegistry,
) -> dg.MaterializeResult:
    """Fine-tune the champion on the correction dataset (bootstrap on the synthetic catalog when there is none), evaluate on gold, log to MLflow, promote only if better."""
    import mlflow

    from ml.augment import eval_transform, train_augmentation
    from ml.data import SegmentationSamples
    from ml.evaluate import evaluate_model
    from ml.model import architecture_of, build_model, select_device
    from ml.train import EpochStats, TrainConfig, autocast_dtype, fit, seed_everything

    seed_everything(config.seed)
    device = select_device(config.device)
    champion = model_registry.load_champion(device=str(device))
    train_rows = correction_dataset[correction_dataset["split"] == "train"]
    gold_rows = correction_dataset[correction_dataset["split"] == "gold"]
    dataset_version = str(correction_dataset["dataset_version"].iloc[0]) if len(correction_dataset) else "empty"
    sample_side = config.input_size * 2
    serving_size = config.serving_size()

    images, masks, _ = load_samples(object_store, train_rows)
    if champion is None:
        mode = "bootstrap"
        model = build_model(architecture=config.architecture)
        syn_images, syn_masks, _ = synthetic_samples(config.bootstrap_images, SYNTHETIC_BOOTSTRAP_SEED, sample_side)
        learning_rate, budget = config.bootstrap_learning_rate, config.bootstrap_seconds
    else:
        if not len(train_rows):
            context.log.info("no corrections to learn from yet; the champion stays")
            return dg.MaterializeResult(metadata={"trained": False, "reason": "the correction dataset has no training images", "champion_version": champion.version})
        mode = "fine_tune"
        model = copy.deepcopy(champion.model)
        # A slice of the synthetic catalog keeps the model from forgetting what corrections do not show.
        syn_images, syn_masks, _ = synthetic_samples(config.synthetic_replay_images, SYNTHETIC_BOOTSTRAP_SEED + 1 + len(train_rows), sample_side)
        learning_rate, budget = config.fine_tune_learning_rate, config.fine_tune_seconds
    images, masks = images + syn_images, masks + syn_masks
    train_idx, val_idx = split_validation(len(images), config.validation_fraction, config.seed)

    gold_images, gold_masks, gold_categories = load_samples(object_store, gold_rows)
    gold_source = "corrections"
    if len(gold_images) < config.min_gold_images:
        # Too few human-verified gold items to judge a model: add a fixed synthetic hold-out.
        syn = synthetic_samples(config.synthetic_gold_images, SYNTHETIC_GOLD_SEED, sample_side)
        gold_images, gold_masks, gold_categories = gold_images + syn[0], gold_masks + syn[1], gold_categories + syn[2]
        gold_source = "corrections+synthetic" if len(gold_rows) else "synthetic"

    train_config = TrainConfig(
        input_size=config.input_size, batch_size=config.batch_size, max_epochs=config.max_epochs, learning_rate=learning_rate,
        patience=config.patience, max_seconds=budget, seed=config.seed, device=str(device),
        lr_schedule=config.lr_schedule, boundary_weight=config.boundary_weight,
        channels_last=config.channels_last, num_workers=config.loader_workers, mixed_precision=config.mixed_precision,
    )
    amp_dtype = autocast_dtype(config.mixed_precision, device)
    model_registry.activate()
    with mlflow.start_run(run_name=f"{mode}-{dataset_version}") as run:
        mlflow.set_tags({"hitl.mode": mode, "hitl.dataset_version": dataset_version, "hitl.parent_version": champion.version if champion else "none", "hitl.dagster_run_id": context.run_id})
        mlflow.log_params({
            "mode": mode, "architecture": architecture_of(model), "lr_schedule": config.lr_schedule, "boundary_weight": config.boundary_weight, "input_size": config.input_size, "inference_size": serving_size, "batch_size": config.batch_size,
            "max_epochs": config.max_epochs, "learning_rate": learning_rate, "max_seconds": budget, "seed": config.seed,
            "patience": config.patience, "train_images": len(train_idx), "validation_images": len(val_idx), "correction_images": len(train_rows),
            "synthetic_images": len(syn_images), "gold_images": len(gold_images), "gold_source": gold_source,
            "dataset_version": dataset_version, "parent_version": champion.version if champion else "none", "device": str(device),
            "promotion_margin": config.promotion_margin, "category_regression_tolerance": config.category_regression_tolerance,
            "channels_last": config.channels_last, "loader_workers": config.loader_workers,
            "mixed_precision": str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else "off",
        })
        if len(correction_dataset):
            dataset = mlflow.data.from_pandas(
                correction_dataset[["image_id", "batch", "category", "split", "source", "mask_digest"]],
                source=f"{object_store.describe()}/datasets/{dataset_version}/manifest.parquet",
                name="correction_dataset", digest=dataset_version,
            )
            mlflow.log_input(dataset, context="training")

        def log_epoch(stats: EpochStats) -> None:
            mlflow.log_metrics({"train_loss": stats.train_loss, "val_iou": stats.val_iou, "epoch_seconds": stats.seconds}, step=stats.epoch)
            context.log.info(f"epoch {stats.epoch}: loss {stats.train_loss:.4f}, validation IoU {stats.val_iou:.4f}")

        started = time.perf_counter()
        train_set = SegmentationSamples([images[i] for i in train_idx], [masks[i] for i in train_idx], train_augmentation(config.input_size, seed=config.seed))
        val_set = SegmentationSamples([images[i] for i in val_idx], [masks[i] for i in val_idx], eval_transform(config.input_size))
        result = fit(model, train_set, val_set, train_config, on_epoch=log_epoch)
        training_seconds = time.perf_counter() - started

        # each model is scored at the size it serves at
        _, challenger = evaluate_model(result.model, gold_images, gold_masks, serving_size, gold_categories, device=device)
        incumbent = None
        if champion is not None:
            _, incumbent = evaluate_model(champion.model, gold_images, gold_masks, champion.input_size, gold_categories, device=device)
        metrics = {"gold_iou": challenger["iou"], "gold_product_iou": challenger["product_iou"], "gold_boundary_f": challenger["boundary_f"], "gold_mae": challenger["mae"], "training_seconds": training_seconds, "best_val_iou": result.best_val_iou, "epochs": float(len(result.history))}
        for category, values in challenger["per_category"].items():
            metrics.update({f"gold_iou_{category}": values["iou"], f"gold_product_iou_{category}": values["product_iou"], f"gold_boundary_f_{category}": values["boundary_f"], f"gold_mae_{category}": values["mae"]})
        if incumbent is not None:
            metrics["champion_gold_iou"] = incumbent["iou"]
            metrics["champion_gold_product_iou"] = incumbent["product_iou"]
            metrics.update({f"champion_gold_iou_{c}": v["iou"] for c, v in incumbent["per_category"].items()})
        mlflow.log_metrics(metrics)
        log_prediction_grid(champion, result.model, serving_size, gold_images, gold_masks, gold_categories, config.grid_samples, device)
        calibration = log_calibration(object_store, review_store)
        decision = promotion_decision(challenger, incumbent, config.promotion_margin, config.category_regression_tolerance)
        version = model_registry.log_model(
            result.model, serving_size,
            tags={"gold_iou": f"{challenger['iou']:.6f}", "train_input_size": str(config.input_size), "dataset_version": dataset_version, "mode": mode, "calibrated": str(calibration["calibrated"]).lower()},
        )
        outcome = "promoted" if decision.promoted else "rejected"
        model_registry.tag_version(version, {"promotion": outcome, "promotion_reason": decision.reason})
        mlflow.set_tags({"hitl.promotion": outcome, "hitl.promotion_reason": decision.reason, "hitl.model_version": version})
    if decision.promoted:
        model_registry.promote(version, decision.reason, actor="segmentation_model")
    elif calibration["calibrated"] and champion is not None:
        # The champion stays, so tonight's calibrator, fitted on the review history of its own outputs, serves with it.
        model_registry.adopt_calibrator(champion.version, run.info.run_id, f"refreshed by the retraining that logged v{version} (rejected)")
    champion_iou = challenger["iou"] if decision.promoted else incumbent["iou"]
    context.log.info(f"model v{version} {outcome}: {decision.reason}")
    return dg.MaterializeResult(
        metadata={
            "trained": True,
            "mode": mode,
            "model_version": version,
            "promoted": decision.promoted,
            "promotion_reason": decision.reason,
            "champion_version": version if decision.promoted else champion.version,
            "gold_iou": challenger["iou"],
            "gold_product_iou": challenger["product_iou"],
            "gold_boundary_f": challenger["boundary_f"],
            "gold_mae": challenger["mae"],
            "champion_gold_iou": champion_iou,
            "gold_images": len(gold_images),
            "gold_source": gold_source,
            "epochs": len(result.history),
            "stop_reason": result.stop_reason,
            "training_seconds": training_seconds,
            "dataset_version": dataset_version,
            "mlflow_run_id": run.info.run_id,
            **{k: v for k, v in calibration.items() if k != "calibrated"},
            "calibrated": calibration["calibrated"],
            "champion_calibrator_refreshed": bool(calibration["calibrated"] and not decision.promoted),
            "per_category_iou": dg.MetadataValue.json({cat: round(v["iou"], 4) for cat, v in challenger["per_category"].items()}),
        }
    )
