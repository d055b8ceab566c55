"""The replayed reviewer: answers open review tasks from ground-truth masks, through the review store."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ml.imageio import decode_mask, encode_png
from ml.reviewer import ReplayConfig, answer_task
from resources.object_store import ObjectStore
from resources.review_store import ReviewStore


@dataclass
class ReplaySummary:
    """What a replay session did."""

    decided: int = 0
    by_decision: dict[str, int] = field(default_factory=dict)
    missing_truth: list[str] = field(default_factory=list)


def truth_mask_path(masks_dir: Path, file: str) -> Path | None:
    """The ground-truth mask with the image's base name (any image extension), or None."""
    stem = PurePosixPath(file).stem
    for candidate in (masks_dir / f"{stem}.png", *sorted(masks_dir.glob(f"{stem}.*"))):
        if candidate.is_file():
            return candidate
    return None


def replay_reviews(
    store: ReviewStore,
    objects: ObjectStore,
    masks_dir: str | Path,
    config: ReplayConfig = ReplayConfig(),
    reviewers: tuple[str, ...] = ("replay-a", "replay-b"),
    claim_size: int = 20,
    batch: str | None = None,
) -> ReplaySummary:
    """Claim and answer every open task; two reviewer identities so double-review items get two people."""
    masks_dir = Path(masks_dir)
    rng = np.random.default_rng(config.seed)
    summary = ReplaySummary()
    idle_rounds = 0
    turn = 0
    while idle_rounds < len(reviewers):
        reviewer = reviewers[turn % len(reviewers)]
        turn += 1
        claimed = store.claim(reviewer, claim_size, batch=batch)
        if not claimed:
            idle_rounds += 1
            continue
        idle_rounds = 0
        for task in claimed:
            truth_path = truth_mask_path(masks_dir, task.file)
            if truth_path is None:
                summary.missing_truth.append(task.file)
                store.record_decision(task.id, reviewer, "reject", seconds=1.0, failure_mode="", note="replayed reviewer: no ground truth for this image")
                summary.by_decision["reject"] = summary.by_decision.get("reject", 0) + 1
                summary.decided += 1
                continue
            ai_mask = decode_mask(objects.get_bytes(task.mask_key), task.mask_key)
            truth = decode_mask(truth_path.read_bytes(), str(truth_path))
            answer = answer_task(ai_mask, truth, config, rng)
            corrected_key = ""
            if answer.decision == "correct":
                corrected_key = f"corrections/{task.batch}/{task.image_id}/{reviewer}-{uuid.uuid4().hex[:8]}.png"
                objects.put_bytes(corrected_key, encode_png(answer.corrected_mask), "image/png")
            store.record_decision(
                task.id, reviewer, answer.decision, seconds=answer.seconds,
                failure_mode=answer.failure_mode or "", corrected_mask_key=corrected_key,
                note=f"replayed reviewer (IoU {answer.iou:.3f})",
            )
            summary.by_decision[answer.decision] = summary.by_decision.get(answer.decision, 0) + 1
            summary.decided += 1
    return summary
