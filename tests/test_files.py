"""tff_byz/files.py: atomic writes that keep the umask's mode."""

import json
import os
import stat

import numpy as np
import pytest

from tff_byz import files


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_json_is_written_whole_with_the_umasks_mode(tmp_path, umask_027):
    path = tmp_path / "summary.json"
    files.write_json_atomic(path, {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2]}
    assert _mode(path) == 0o640  # 0666 less the umask, as open() would make it (not 0600)
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.md"
    files.write_text_atomic(path, "old")
    with pytest.raises(RuntimeError, match="midway"):
        with files.replaced_atomically(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("midway")
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["report.md"]
    with pytest.raises(TypeError):
        files.write_json_atomic(path, {"x": object()})
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["report.md"]


def test_umask_mode(umask_027):
    assert files.umask_mode() == 0o640 and files.umask_mode(0o777) == 0o750


def test_exclusive_holds_one_holder_names_it_and_removes_its_file(tmp_path):
    path = tmp_path / ".run.lock"
    assert files.lock_holder(path) is None
    with files.exclusive(path, "the directory is in use"):
        assert path.read_text() == str(os.getpid())
        assert files.lock_holder(path) == str(os.getpid())
        with pytest.raises(files.BusyError, match=rf"^the directory is in use \(pid "
                                                   rf"{os.getpid()}\); wait for it to end"):
            with files.exclusive(path, "the directory is in use"):
                pass
    assert not path.exists() and files.lock_holder(path) is None
    with files.exclusive(path, "again"):  # free again
        pass
