"""Re-scoring: what a new champion changes in a batch's routing while people are still reviewing it."""

import pandas as pd

RESCORED = "rescored"


def mark_rescored(previous: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame:
    """Items escalated under an earlier model that the current model puts within tolerance get reason ``rescored``."""
    current = current.copy()
    current["rescored"] = False
    if previous is None or previous.empty or "model_version" not in previous.columns:
        return current
    before = previous.drop_duplicates("image_id", keep="last").set_index("image_id")
    was_escalated = current["image_id"].map(before["route"]).eq("escalate")
    other_model = current["image_id"].map(before["model_version"].astype(str)).ne(current["model_version"].astype(str))
    rescored = was_escalated & other_model & current["route"].eq("auto_approve")
    current.loc[rescored, "reasons"] = RESCORED
    current["rescored"] = rescored
    return current
