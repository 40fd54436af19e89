"""Tests for tff_byz/datasets/cache.py."""

import os
import pathlib

import numpy as np

from tff_byz.datasets import cache


def test_cache_root_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "env"))
    assert cache.cache_root() == tmp_path / "env"
    assert cache.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_root() == pathlib.Path.home() / ".cache" / "tff_byz"


def test_cached_path_depends_on_source_stat_and_version(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"abc")
    first = cache.cached_path("demo", [source], version="v1", cache_dir=tmp_path / "c")
    assert first.parent == tmp_path / "c" and first.name.startswith("demo-") and first.suffix == ".npz"
    assert cache.cached_path("demo", [source], version="v1", cache_dir=tmp_path / "c") == first
    assert cache.cached_path("demo", [source], version="v2", cache_dir=tmp_path / "c") != first
    source.write_bytes(b"abcd")  # size changes
    assert cache.cached_path("demo", [source], version="v1", cache_dir=tmp_path / "c") != first


def test_save_and_load_roundtrip_atomically(tmp_path):
    path = tmp_path / "sub" / "a.npz"
    assert cache.load_npz(path) is None
    arrays = {"x": np.arange(6, dtype=np.uint8).reshape(2, 3), "ids": np.asarray(["f1", "f22"])}
    assert cache.save_npz_atomic(path, arrays)
    loaded = cache.load_npz(path)
    np.testing.assert_array_equal(loaded["x"], arrays["x"])
    np.testing.assert_array_equal(loaded["ids"], arrays["ids"])
    assert loaded["x"].dtype == np.uint8
    assert os.listdir(path.parent) == ["a.npz"]  # no temporary file left behind


def test_unreadable_cache_is_ignored(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    assert cache.load_npz(path) is None


def test_unwritable_cache_only_warns(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache directory should be
    assert not cache.save_npz_atomic(blocker / "a.npz", {"x": np.zeros(1)})
    assert "could not write cache file" in caplog.text
