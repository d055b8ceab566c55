"""ai_outputs: the champion model's mask, cut-out and brand composite for every accepted image."""

from concurrent.futures import Future, ThreadPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd

from hitl_assets.partitions import batches
from ml.data import resize_for_model
from ml.imageio import encode_jpeg, encode_png, load_rgb
from ml.infer import predict_probabilities
from ml.model import select_device
from ml.postprocess import BrandStandard, postprocess
from ml.quality import SIGNALS, quality_signals
from resources.model_registry import ModelRegistry
from resources.object_store import ObjectStore


class InferenceConfig(dg.Config):
    """How ai_outputs runs the model and renders the brand composite."""

    batch_size: int = 16
    device: str = "auto"
    background_rgb: list[int] = [255, 255, 255]
    shadow_opacity: float = 0.35
    correct_colour: bool = True
    jpeg_quality: int = 92

    def brand(self) -> BrandStandard:
        return BrandStandard(
            background_rgb=tuple(self.background_rgb), shadow_opacity=self.shadow_opacity, correct_colour=self.correct_colour
        )


def output_keys(image_id: str, model_version: str) -> dict[str, str]:
    """Where one image's AI outputs live; versioned by model so a new champion never overwrites history."""
    base = f"outputs/{image_id}/v{model_version}"
    return {"mask_key": f"{base}/mask.png", "cutout_key": f"{base}/cutout.png", "composite_key": f"{base}/composite.jpg"}


def render_outputs(store: ObjectStore, row: dict, prob: np.ndarray | None, brand: BrandStandard, keys: dict[str, str], jpeg_quality: int, mask: np.ndarray | None = None) -> dict:
    """Decode the full-size photo, build mask, cut-out and composite, write them; return the row's outputs."""
    image = load_rgb(store.get_bytes(row["image_key"]), row["file"])
    result = postprocess(image, prob, brand, mask=mask)
    del image
    store.put_bytes(keys["mask_key"], encode_png(result.mask), "image/png")
    store.put_bytes(keys["cutout_key"], encode_png(result.cutout), "image/png")
    store.put_bytes(keys["composite_key"], encode_jpeg(result.composite, quality=jpeg_quality), "image/jpeg")
    height, width = result.mask.shape
    return {
        **keys,
        "colour_distance": float(result.colour_distance),
        "mask_pixels": int(np.count_nonzero(result.mask)),
        "mask_width": width,
        "mask_height": height,
    }


@dg.asset(
    partitions_def=batches,
    group_name="ai",
    check_specs=[
        dg.AssetCheckSpec("masks_match_images", asset="ai_outputs", description="Every mask exists, is non-empty and has its image's size.")
    ],
)
def ai_outputs(context: dg.AssetExecutionContext, config: InferenceConfig, raw_images: pd.DataFrame, object_store: ObjectStore, model_registry: ModelRegistry):
    """The champion's mask, RGBA cut-out and colour-corrected white-background composite with shadow, plus quality signals."""
    device = select_device(config.device)
    champion = model_registry.load_champion(device=str(device))
    if champion is None:
        raise dg.Failure(
            "no champion segmentation model yet: materialize segmentation_model (retrain_job) first; "
            "with no corrections it bootstraps on the synthetic catalog"
        )
    accepted = raw_images[raw_images["status"] == "accepted"].drop_duplicates("image_id")
    records = accepted.to_dict("records")
    brand = config.brand()
    size = champion.input_size
    rows: list[dict] = []

    def load_small(record: dict) -> np.ndarray:
        # Decode straight to a reduced size (JPEG draft mode) for the model; the full photo is decoded later, once.
        return resize_for_model(load_rgb(object_store.get_bytes(record["image_key"]), record["file"], max_side=size * 2), size)

    chunks = [records[i : i + config.batch_size] for i in range(0, len(records), config.batch_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list[tuple[dict, dict, Future]] = []
        prefetch = pool.submit(lambda c: list(map(load_small, c)), chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            smalls = prefetch.result()
            if index + 1 < len(chunks):
                prefetch = pool.submit(lambda c: list(map(load_small, c)), chunks[index + 1])
            probs = predict_probabilities(champion.model, smalls, size, device=device, batch_size=len(smalls))
            # Finish the previous chunk before queueing more full-size work: memory stays bounded.
            rows.extend({**record, **signals, **future.result()} for record, signals, future in pending)
            pending = []
            for record, prob in zip(chunk, probs):
                signals = quality_signals(prob)
                keys = output_keys(record["image_id"], champion.version)
                pending.append((record, signals, pool.submit(render_outputs, object_store, record, prob, brand, keys, config.jpeg_quality)))
            context.log.debug(f"chunk {index + 1}/{len(chunks)} done")
        rows.extend({**record, **signals, **future.result()} for record, signals, future in pending)

    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=[*accepted.columns, *SIGNALS, "mask_key", "cutout_key", "composite_key", "colour_distance", "mask_pixels", "mask_width", "mask_height"])
    frame["model_version"] = champion.version
    # The champion's calibrator turns the signals into P(needs correction); NaN when none is fitted yet.
    frame["needs_correction_probability"] = champion.calibrator.predict(frame) if champion.calibrator is not None and len(frame) else np.nan
    frame = frame.drop(columns=["status", "reason", "detail"], errors="ignore")
    yield dg.Output(
        frame,
        metadata={
            "images": len(frame),
            "model_version": champion.version,
            "input_size": size,
            "calibrated": champion.calibrator is not None,
            "device": str(device),
            "mean_confidence": float(frame["confidence"].mean()) if len(frame) else 0.0,
            "signals": dg.MetadataValue.md(frame[list(SIGNALS)].describe().round(3).to_markdown()) if len(frame) else "none",
        },
    )
    yield check_masks(object_store, frame)


def check_masks(store: ObjectStore, frame: pd.DataFrame) -> dg.AssetCheckResult:
    """Masks were written, are non-empty, and have their image's size."""
    problems, empty = [], []
    for row in frame.itertuples():
        if not store.exists(row.mask_key):
            problems.append(f"{row.file}: mask missing")
        elif (row.mask_height, row.mask_width) != (row.height, row.width):
            problems.append(f"{row.file}: mask {row.mask_width}x{row.mask_height} vs image {row.width}x{row.height}")
        elif row.mask_pixels == 0:
            empty.append(f"{row.file}: empty mask")
    # A missing or mis-sized mask is a pipeline bug (error); an empty one is a model failure that routing escalates (warning).
    return dg.AssetCheckResult(
        check_name="masks_match_images",
        passed=not problems and not empty,
        severity=dg.AssetCheckSeverity.ERROR if problems else dg.AssetCheckSeverity.WARN,
        metadata={"checked": len(frame), "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in (problems + empty)[:50]) or "none")},
    )
