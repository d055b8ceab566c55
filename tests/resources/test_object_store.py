import pytest

from resources.object_store import InvalidKeyError, validate_key


def test_put_get_list_delete(object_store):
    object_store.put_bytes("inbox/b1/a.png", b"abc")
    object_store.put_bytes("inbox/b1/sub/c.png", b"xyz1")
    object_store.put_bytes("inbox/b2/d.png", b"d")
    assert object_store.get_bytes("inbox/b1/a.png") == b"abc"
    assert [e.key for e in object_store.list("inbox/b1/")] == ["inbox/b1/a.png", "inbox/b1/sub/c.png"]
    assert [e.size for e in object_store.list("inbox/b1/")] == [3, 4]
    assert object_store.list_folders("inbox") == ["b1", "b2"]
    assert object_store.exists("inbox/b2/d.png")
    object_store.delete("inbox/b2/d.png")
    assert not object_store.exists("inbox/b2/d.png")
    assert object_store.list("nothing/") == []


def test_exists_many_answers_each_key_in_order(object_store):
    for key in ("out/a/mask.png", "out/c/mask.png"):
        object_store.put_bytes(key, b"m")
    keys = ["out/a/mask.png", "out/b/mask.png", "out/c/mask.png", "out/a/mask.png"]
    assert object_store.exists_many(keys) == [True, False, True, True]
    assert object_store.exists_many([]) == []


def test_missing_object_names_the_key(object_store):
    with pytest.raises(FileNotFoundError, match="inbox/none.png"):
        object_store.get_bytes("inbox/none.png")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path", "a/../../b", "a\\b", "", "a/./b"])
def test_keys_cannot_escape_the_store(object_store, key):
    with pytest.raises(InvalidKeyError):
        validate_key(key)
    with pytest.raises(InvalidKeyError):
        object_store.put_bytes(key, b"x")


def test_overwrite_is_atomic_and_leaves_no_temp_files(object_store):
    for i in range(5):
        object_store.put_bytes("t/x.bin", bytes([i]) * 10)
    assert object_store.get_bytes("t/x.bin") == bytes([4]) * 10
    assert [e.key for e in object_store.list("t/")] == ["t/x.bin"]
