"""Dagster definitions, the review loop's orchestration and the ``hitl`` command line."""
