"""One dynamic partition per ingest batch (a supplier drop, or a day's arrivals)."""

import re

import dagster as dg

batches = dg.DynamicPartitionsDefinition(name="batches")

INBOX_PREFIX = "inbox"
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def is_valid_batch_name(name: str) -> bool:
    """Batch names become object keys and partition keys: letters, digits, '.', '_' and '-' only."""
    return bool(BATCH_NAME.fullmatch(name)) and ".." not in name  # fullmatch: "b1\n" is not "b1"
