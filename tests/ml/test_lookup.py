"""ml.lookup: positions and membership of string keys, for Arrow-backed and object columns alike."""

import numpy as np
import pandas as pd
import pytest

from ml.lookup import contains, positions

KEYS = ["b", "a", "b", "c", "a"]


@pytest.mark.parametrize("dtype", ["str", object])
def test_positions_first_and_last_of_repeated_keys(dtype):
    values = pd.Series(["a", "b", "c", "x"], dtype=dtype)
    keys = pd.Series(KEYS, dtype=dtype)
    assert positions(values, keys).tolist() == [1, 0, 3, -1]
    assert positions(values, keys, last=True).tolist() == [4, 2, 3, -1]
    # the same as pandas' own lookup on the de-duplicated keys
    last = pd.Series(np.arange(len(keys)), index=keys).groupby(level=0).last()
    assert positions(values, keys, last=True).tolist() == [int(last.get(v, -1)) for v in values]


def test_contains_and_text_of_non_string_keys():
    assert contains(pd.Series(["a", None, "z"], dtype=object), ["a", "z"]).tolist() == [True, False, True]
    assert contains([7, "8"], ["7"]).tolist() == [True, False]  # compared as text
    assert positions([], KEYS).tolist() == [] and positions(["a"], []).tolist() == [-1]


def test_many_ids_agree_with_pandas():
    rng = np.random.default_rng(0)
    ids = pd.Series([f"img-{i:07d}" for i in range(200_000)], dtype="str")
    known = ids.sample(frac=0.3, random_state=1)
    queried = pd.concat([ids, pd.Series(["img-x", "img-y"], dtype="str")]).iloc[rng.permutation(len(ids) + 2)]
    assert (contains(queried, known) == queried.isin(known).to_numpy()).all()
    expected = pd.Index(known).get_indexer(queried)
    assert (positions(queried, known) == expected).all()
