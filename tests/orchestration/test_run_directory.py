"""orchestration.run_directory: the checks made on the run directory before anything is
written, and where the lock lives."""

import dataclasses
import os

import pytest

from orchestration.config import RESUMABLE_CHANGES, ExperimentConfig
from orchestration.run_directory import (RunDirectoryError, RunPaths, check_writable, in_use,
                                         lock_path, prepare_run_directory)
from tff_byz import files
from tff_byz.errors import ConfigError


@pytest.fixture(scope="module")
def base():
    """One resolved config (resolving imports TensorFlow once); tests replace output_dir."""
    return ExperimentConfig(run_name="r").resolved()


@pytest.fixture
def config(base, tmp_path):
    return dataclasses.replace(base, output_dir=str(tmp_path / "out"))


def _store(config):
    """A stored run: <output_dir>/<run_name>/config.json."""
    root = os.path.join(config.output_dir, config.run_name)
    os.makedirs(root)
    with open(os.path.join(root, "config.json"), "w") as f:
        f.write(config.to_json())
    return root


def _tree(top):
    """Every path below `top` with its content (files) or None (directories)."""
    found = {}
    for directory, subdirs, names in os.walk(top):
        for name in subdirs:
            found[os.path.join(directory, name)] = None
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[path] = f.read()
    return found


def _refused(tmp_path, config, message, **flags):
    before = _tree(tmp_path)
    with pytest.raises(RunDirectoryError) as info:
        prepare_run_directory(config, **flags)
    assert str(info.value) == message
    assert _tree(tmp_path) == before  # nothing written, nothing removed
    return info.value


def test_run_directory_error_is_a_config_error():
    assert issubclass(RunDirectoryError, ConfigError)


def test_run_paths():
    paths = RunPaths("/x/r")
    assert (paths.config, paths.metrics, paths.summary, paths.state, paths.tensorboard,
            paths.weights) == ("/x/r/config.json", "/x/r/metrics.csv", "/x/r/summary.json",
                               "/x/r/state", "/x/r/tensorboard", "/x/r/weights.csv")


def test_fresh_run_creates_nothing(tmp_path, base):
    config = dataclasses.replace(base, output_dir=str(tmp_path / "a" / "b"))
    paths = prepare_run_directory(config, resume=False, overwrite=False)
    assert paths == RunPaths(str(tmp_path / "a" / "b" / "r"))
    assert os.listdir(tmp_path) == []


def test_existing_run_needs_resume_or_overwrite(tmp_path, config):
    root = _store(config)
    _refused(tmp_path, config,
             f"run directory {root} already holds a run; pass --resume to continue it or "
             "--overwrite to replace it.", resume=False, overwrite=False)


def test_directory_without_config_is_not_a_run(tmp_path, config):
    os.makedirs(os.path.join(config.output_dir, "r", "state"))
    assert prepare_run_directory(config, resume=False, overwrite=False).root == \
        os.path.join(config.output_dir, "r")


def test_overwrite_checks_without_deleting(tmp_path, config):
    root = _store(config)
    before = _tree(tmp_path)
    assert prepare_run_directory(config, resume=False, overwrite=True) == RunPaths(root)
    assert _tree(tmp_path) == before


def test_resume_without_config_json(tmp_path, config):
    root = os.path.join(config.output_dir, "r")
    _refused(tmp_path, config, f"--resume: no run to resume at {root} (no config.json).",
             resume=True, overwrite=False)
    os.makedirs(root)  # a directory, but no config.json
    _refused(tmp_path, config, f"--resume: no run to resume at {root} (no config.json).",
             resume=True, overwrite=False)


def test_resume_and_overwrite_exclude_each_other(tmp_path, config):
    message = "--resume and --overwrite exclude each other; choose one."
    _refused(tmp_path, config, message, resume=True, overwrite=True)
    _store(config)
    _refused(tmp_path, config, message, resume=True, overwrite=True)


def test_resume_with_same_settings(tmp_path, config):
    root = _store(config)
    before = _tree(tmp_path)
    assert prepare_run_directory(config, resume=True, overwrite=False) == RunPaths(root)
    assert _tree(tmp_path) == before


def test_resume_may_change_the_resumable_settings(tmp_path, config):
    root = _store(config)
    assert RESUMABLE_CHANGES == ("rounds", "tff_workers", "output_dir", "eval_every",
                                 "checkpoint_every")
    changed = dataclasses.replace(config, rounds=99, eval_every=3, checkpoint_every=6)
    assert prepare_run_directory(changed, resume=True, overwrite=False) == RunPaths(root)


def test_resume_with_differing_settings_names_them(tmp_path, config):
    root = _store(config)
    changed = dataclasses.replace(config, seed=3, client_lr=0.05, aggregator="median",
                                  rounds=99)
    _refused(tmp_path, changed,
             f"--resume: settings differ from the stored run at {root}: "
             "aggregator='mean:weighted=true'→'median', client_lr=0.1→0.05, seed=0→3; only rounds, "
             "tff_workers, output_dir, eval_every, checkpoint_every may change.",
             resume=True, overwrite=False)


def test_resume_with_unreadable_config(tmp_path, config):
    root = _store(config)
    path = os.path.join(root, "config.json")
    with open(path, "w") as f:
        f.write("{not json")
    error = _refused(tmp_path, config,
                     f"--resume: {path} is not a readable run config (Expecting property name "
                     "enclosed in double quotes: line 1 column 2 (char 1))",
                     resume=True, overwrite=False)
    assert error.__cause__ is None
    with open(path, "w") as f:
        f.write('{"bogus": 1}')
    with pytest.raises(RunDirectoryError, match=r"is not a readable run config \(unknown config "
                                                r"keys \['bogus'\]"):
        prepare_run_directory(config, resume=True, overwrite=False)


def test_output_dir_under_a_regular_file(tmp_path, base):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = dataclasses.replace(base, output_dir=str(blocker / "sub" / "dir"))
    for flags in (dict(resume=False, overwrite=False), dict(resume=True, overwrite=False),
                  dict(resume=False, overwrite=True), dict(resume=True, overwrite=True)):
        _refused(tmp_path, config,
                 f"--output_dir={blocker / 'sub' / 'dir'}: {blocker} is a file, not a directory.",
                 **flags)


def test_output_dir_is_a_regular_file(tmp_path, base):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = dataclasses.replace(base, output_dir=str(blocker))
    _refused(tmp_path, config, f"--output_dir={blocker}: {blocker} is a file, not a directory.",
             resume=False, overwrite=False)


def test_check_writable_relative_path(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunDirectoryError,
                       match=f"^--output_dir=f/x: {tmp_path / 'f'} is a file, not a directory.$"):
        check_writable("f/x")
    check_writable("new/dir")  # first existing ancestor: tmp_path
    assert sorted(os.listdir(tmp_path)) == ["f"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_read_only_directory(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(RunDirectoryError,
                           match=f"^--output_dir={locked / 'x'}: {locked} is not writable.$"):
            check_writable(str(locked / "x"))
    finally:
        locked.chmod(0o700)


def test_lock_path_is_beside_the_run_directory(config):
    path = lock_path(config)
    root = os.path.join(config.output_dir, config.run_name)
    assert path == os.path.join(config.output_dir, ".r.lock")
    assert os.path.dirname(path) == config.output_dir
    assert not path.startswith(root + os.sep)  # --overwrite deletes the run directory


def test_run_in_use(tmp_path, config):
    os.makedirs(config.output_dir)
    paths = RunPaths(os.path.join(config.output_dir, "r"))
    assert in_use(paths) == f"run directory {paths.root} is in use by another run"
    with files.exclusive(lock_path(config), in_use(paths)):
        for flags in (dict(resume=False, overwrite=False), dict(resume=True, overwrite=True)):
            _refused(tmp_path, config,
                     f"run directory {paths.root} is in use by another run (pid {os.getpid()}); "
                     "wait for it to end or stop it, then rerun", **flags)
        # the holder itself passes `locked=True`
        assert prepare_run_directory(config, resume=False, overwrite=False, locked=True) == paths
    assert not os.path.exists(lock_path(config))
    assert prepare_run_directory(config, resume=False, overwrite=False) == paths
