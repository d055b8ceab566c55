"""Where string keys (image ids, versions) are found among other keys, for whole columns at once.

pyarrow's hash kernels (``is_in``, ``index_in``) on the columns' text, whether the column is
pandas' Arrow-backed ``str`` (what Parquet tables read back as) or ``object``. On a million
Arrow-backed ids, ``pyarrow.compute.is_in`` took 0.03 s where ``Series.isin`` took 0.24-0.30 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_TEXT = pa.large_string()


def _text(values) -> pa.Array:
    series = values if isinstance(values, (pd.Series, pd.Index)) else pd.Series(np.asarray(values, dtype=object))
    return pa.array(series.astype("str"), type=_TEXT)


def contains(values, keys) -> np.ndarray:
    """For each of ``values``: is it one of ``keys``? (bool array; a missing value is in no set)."""
    found = pc.is_in(_text(values), value_set=_text(keys), skip_nulls=True)
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def positions(values, keys, last: bool = False) -> np.ndarray:
    """For each of ``values``: its position in ``keys`` (int64), -1 where it is not there.

    A key that appears more than once gives its first position, or its last with ``last=True``.
    """
    keys_text = _text(keys)
    if last:
        keys_text = keys_text[::-1]
    found = pc.fill_null(pc.index_in(_text(values), value_set=keys_text, skip_nulls=True), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    if last:
        found = np.where(found >= 0, len(keys_text) - 1 - found, -1)
    return found
