"""Figures for the admin page: queue depth, throughput, per-reviewer work and double-review agreement."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from resources.review_store import ReviewStore


def _utc(series: pd.Series) -> pd.Series:
    values = pd.to_datetime(series, utc=True)
    return values


def agreement(decisions: pd.DataFrame) -> dict:
    """Double-reviewed images (two or more tasks of one image in one batch, decided by different people):
    how many pairs, and the share where both gave the same decision."""
    if decisions.empty:
        return {"pairs": 0, "agreed": 0, "rate": None}
    pairs = agreed = 0
    for _, group in decisions.groupby(["batch", "image_id"]):
        group = group.drop_duplicates("reviewer")
        if len(group) < 2:
            continue
        rows = group.to_dict("records")
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                pairs += 1
                agreed += int(rows[i]["decision"] == rows[j]["decision"])
    return {"pairs": pairs, "agreed": agreed, "rate": (agreed / pairs) if pairs else None}


def admin_stats(store: ReviewStore, now: datetime | None = None) -> dict:
    """Everything the admin page shows, as plain JSON-able values."""
    now = now or datetime.now(timezone.utc)
    counts = store.status_counts()
    events = store.events()
    held = store.tasks(status="claimed")
    out: dict = {
        "generated_at": now.isoformat(),
        "queue": {
            "open": counts.get("open", 0),
            "claimed": counts.get("claimed", 0),
            "decided": counts.get("decided", 0),
            "closed": counts.get("closed", 0),
        },
        "throughput": {"last_hour": 0, "last_24h": 0, "per_hour": []},
        "reviewers": [],
        "agreement": agreement(store.latest_decisions()),
        "events": int(len(events)),
    }
    if not events.empty:
        at = _utc(events["created_at"])
        out["throughput"]["last_hour"] = int((at >= now - timedelta(hours=1)).sum())
        out["throughput"]["last_24h"] = int((at >= now - timedelta(hours=24)).sum())
        start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
        recent = at[at >= start]
        buckets = recent.dt.floor("h").value_counts()
        out["throughput"]["per_hour"] = [
            {"hour": (start + timedelta(hours=h)).isoformat(), "decisions": int(buckets.get(pd.Timestamp(start + timedelta(hours=h)), 0))}
            for h in range(24)
        ]
        events = events.assign(at=at)
        holding = held.groupby("claimed_by").size().to_dict() if not held.empty else {}
        for reviewer, group in events.groupby("reviewer"):
            seconds = group["seconds"].astype(float)
            by = group["decision"].value_counts().to_dict()
            out["reviewers"].append({
                "reviewer": str(reviewer),
                "decisions": int(len(group)),
                "tasks": int(group["task_id"].nunique()),
                "approve": int(by.get("approve", 0)),
                "reject": int(by.get("reject", 0)),
                "correct": int(by.get("correct", 0)),
                "last_24h": int((group["at"] >= now - timedelta(hours=24)).sum()),
                "mean_seconds": round(float(seconds.mean()), 2),
                "median_seconds": round(float(np.median(seconds)), 2),
                "holding": int(holding.get(reviewer, 0)),
                "last_decision_at": group["at"].max().isoformat(),
            })
    return out
