"""The promotion gate: a challenger replaces the champion only if it is better overall and no worse per category."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger wins, and the reason people will read in the registry."""

    promoted: bool
    reason: str
    regressions: dict[str, float]


def promotion_decision(challenger: dict, champion: dict | None, margin: float = 0.0, category_tolerance: float = 0.03, min_category_images: int = 3) -> PromotionDecision:
    """Compare gold summaries ({"iou", "per_category": {cat: {"iou", "n"}}}) evaluated on the same gold set.

    Promote when the challenger's gold IoU beats the champion's by at least ``margin`` and no
    category with at least ``min_category_images`` gold images drops by more than ``category_tolerance``.
    """
    if champion is None:
        return PromotionDecision(True, f"no champion yet; gold IoU {challenger['iou']:.4f}", {})
    gain = challenger["iou"] - champion["iou"]
    regressions = {}
    for category, stats in champion.get("per_category", {}).items():
        mine = challenger.get("per_category", {}).get(category)
        if mine is None or stats.get("n", 0) < min_category_images:
            continue
        drop = stats["iou"] - mine["iou"]
        if drop > category_tolerance:
            regressions[category] = round(drop, 4)
    summary = f"gold IoU {challenger['iou']:.4f} vs champion {champion['iou']:.4f} ({gain:+.4f}, margin {margin})"
    if gain < margin:
        return PromotionDecision(False, f"not better: {summary}", regressions)
    if regressions:
        worst = ", ".join(f"{c} -{d:.3f}" for c, d in sorted(regressions.items()))
        return PromotionDecision(False, f"category regression beyond {category_tolerance}: {worst}; {summary}", regressions)
    return PromotionDecision(True, f"better: {summary}", {})
