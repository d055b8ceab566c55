"""Image-level tables as parquet files in the object store, and the IO manager that uses them."""

from __future__ import annotations

import io

import dagster as dg
import pandas as pd

from resources.object_store import ObjectStore

TABLE_PREFIX = "tables"
UNPARTITIONED = "_all"


def table_key(name: str, partition: str | None = None) -> str:
    """Object key of a table, one parquet file per partition."""
    return f"{TABLE_PREFIX}/{name}/{partition or UNPARTITIONED}.parquet"


def write_table(store: ObjectStore, name: str, frame: pd.DataFrame, partition: str | None = None) -> str:
    """Write ``frame`` as parquet; returns the key."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return store.put_bytes(table_key(name, partition), buffer.getvalue(), "application/vnd.apache.parquet")


def read_table(store: ObjectStore, name: str, partition: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one table partition; FileNotFoundError naming it when it was never written.

    ``columns``: read only these (those the partition has; a column written by a later version is skipped).
    """
    data = io.BytesIO(store.get_bytes(table_key(name, partition)))
    if columns is not None:
        import pyarrow.parquet as pq

        present = set(pq.ParquetFile(data).schema_arrow.names)
        columns = [c for c in columns if c in present]
        data.seek(0)
    return pd.read_parquet(data, columns=columns)


def table_partitions(store: ObjectStore, name: str) -> list[str]:
    """Partitions of a table that have been written, sorted."""
    prefix = f"{TABLE_PREFIX}/{name}/"
    return [
        entry.key[len(prefix) : -len(".parquet")]
        for entry in store.list(prefix)
        if entry.key.endswith(".parquet") and entry.key.count("/") == 2
    ]


def read_partitions(store: ObjectStore, name: str, partitions: list[str] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Concatenate partitions of a table (all written ones by default) with a ``batch`` column (``columns``: only these)."""
    keys = table_partitions(store, name) if partitions is None else partitions
    frames = []
    for partition in keys:
        try:
            frame = read_table(store, name, partition, columns=columns)
        except FileNotFoundError:
            continue
        frames.append(frame.assign(batch=partition) if "batch" not in frame.columns else frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame outputs as parquet in the object store, one file per partition."""

    object_store: ObjectStore

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a pandas DataFrame, got {type(obj).__name__}")
        partition = context.partition_key if context.has_partition_key else None
        key = write_table(self.object_store, context.asset_key.to_user_string(), obj, partition)
        context.add_output_metadata({"rows": len(obj), "table": key})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        name = context.asset_key.to_user_string()
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            if len(keys) == 1:
                return read_table(self.object_store, name, keys[0])
            return read_partitions(self.object_store, name, list(keys))
        return read_table(self.object_store, name)
