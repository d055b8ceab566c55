import dagster as dg
import pandas as pd

from resources.tables import ParquetIOManager, read_partitions, read_table, table_partitions, write_table


def test_tables_round_trip_by_partition(object_store):
    write_table(object_store, "review_queue", pd.DataFrame({"image_id": ["a", "b"], "x": [1, 2]}), "b1")
    write_table(object_store, "review_queue", pd.DataFrame({"image_id": ["c"], "x": [3]}), "b2")
    assert table_partitions(object_store, "review_queue") == ["b1", "b2"]
    assert read_table(object_store, "review_queue", "b2")["image_id"].tolist() == ["c"]
    both = read_partitions(object_store, "review_queue")
    assert both["batch"].tolist() == ["b1", "b1", "b2"]


def test_io_manager_stores_partitioned_asset_outputs(object_store):
    parts = dg.StaticPartitionsDefinition(["p1", "p2"])

    @dg.asset(partitions_def=parts)
    def numbers(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"partition": [context.partition_key] * 3, "n": [1, 2, 3]})

    @dg.asset(partitions_def=parts)
    def doubled(numbers: pd.DataFrame) -> pd.DataFrame:
        return numbers.assign(n=numbers["n"] * 2)

    resources = {"io_manager": ParquetIOManager(object_store=object_store)}
    for key in ("p1", "p2"):
        result = dg.materialize([numbers, doubled], partition_key=key, resources=resources)
        assert result.success
    assert read_table(object_store, "doubled", "p2")["n"].tolist() == [2, 4, 6]
    assert read_table(object_store, "numbers", "p1")["partition"].unique().tolist() == ["p1"]
