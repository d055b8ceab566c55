"""The faults suite: each test is a fault scenario and reports whether the product survived it.

``make faults`` runs this folder and writes ``$HITL_FAULTS_JSON`` (default
``$HITL_HOME/bench/faults.json``, i.e. ``.hitl/bench/faults.json``): a list of rows ``{"scenario", "survived", "lost", "duplicated"}``.
A scenario test calls the ``fault_report`` fixture once with its figures *before* asserting, so a
failing scenario is still on record (with ``survived`` false).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_ROWS: list[dict] = []


def faults_json_path() -> Path:
    # Tests point HITL_HOME at temporary folders, so the report's place is fixed at import time.
    return _REPORT_PATH


_REPORT_PATH = Path(os.environ.get("HITL_FAULTS_JSON") or Path(os.environ.get("HITL_HOME", ".hitl")) / "bench" / "faults.json").resolve()


@pytest.fixture
def fault_report():
    """``fault_report(scenario, survived=..., lost=..., duplicated=...)``: record one scenario's outcome."""

    def report(scenario: str, *, survived: bool, lost: int = 0, duplicated: int = 0) -> None:
        _ROWS.append({"scenario": scenario, "survived": bool(survived), "lost": int(lost), "duplicated": int(duplicated)})

    return report


def pytest_sessionfinish(session, exitstatus):
    if not _ROWS:
        return
    path = faults_json_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A session running only some scenarios updates their rows and keeps the others' (`make faults`
    # starts from an empty file, so its report holds exactly the scenarios it ran).
    kept = []
    if path.exists():
        try:
            kept = [row for row in json.loads(path.read_text()) if row.get("scenario") not in {r["scenario"] for r in _ROWS}]
        except (ValueError, AttributeError, TypeError):
            kept = []
    path.write_text(json.dumps(sorted(kept + _ROWS, key=lambda row: row["scenario"]), indent=2) + "\n")
