"""The run directory of one experiment, and the checks made before anything is written.

    <output_dir>/<run_name>/config.json    resolved config, every default explicit
    <output_dir>/<run_name>/metrics.csv    one row per round (tff.program CSV release manager)
    <output_dir>/<run_name>/summary.json   status (running|complete|failed), final metrics
    <output_dir>/<run_name>/state/         tff.program.FileProgramStateManager checkpoints
    <output_dir>/<run_name>/tensorboard/   the same metrics for TensorBoard
    <output_dir>/<run_name>/weights.csv    per-client weights per round (algorithms that learn them)
    <output_dir>/.<run_name>.lock          held while a run writes the directory
"""

from __future__ import annotations

import dataclasses
import json
import os

from orchestration.config import RESUMABLE_CHANGES, ExperimentConfig
from tff_byz import files
from tff_byz.errors import ConfigError

__all__ = ["RunPaths", "RunDirectoryError", "prepare_run_directory", "lock_path", "in_use",
           "check_writable"]


class RunDirectoryError(ConfigError):
    """The run directory is in a state the flags do not allow (CLI: exit 2)."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: str

    @property
    def config(self): return os.path.join(self.root, "config.json")
    @property
    def metrics(self): return os.path.join(self.root, "metrics.csv")
    @property
    def summary(self): return os.path.join(self.root, "summary.json")
    @property
    def state(self): return os.path.join(self.root, "state")
    @property
    def tensorboard(self): return os.path.join(self.root, "tensorboard")
    @property
    def weights(self): return os.path.join(self.root, "weights.csv")


def lock_path(config: ExperimentConfig) -> str:
    # Beside the run directory, not in it: --overwrite deletes the directory.
    return os.path.join(config.output_dir, f".{config.run_name}.lock")


def in_use(paths: RunPaths) -> str:
    return f"run directory {paths.root} is in use by another run"


def prepare_run_directory(config: ExperimentConfig, *, resume: bool, overwrite: bool,
                          locked: bool = False) -> RunPaths:
    """Checks the run directory against the flags before anything is written (`locked`: the
    caller holds the directory's lock)."""
    paths = RunPaths(os.path.join(config.output_dir, config.run_name))
    check_writable(config.output_dir)
    holder = None if locked else files.lock_holder(lock_path(config))
    if holder is not None:
        raise RunDirectoryError(f"{in_use(paths)} (pid {holder}); wait for it to end or stop "
                                "it, then rerun")
    exists = os.path.exists(paths.config)
    if resume and overwrite:
        raise RunDirectoryError("--resume and --overwrite exclude each other; choose one.")
    if resume:
        if not exists:
            raise RunDirectoryError(f"--resume: no run to resume at {paths.root} (no config.json).")
        try:
            with open(paths.config) as f:
                stored = ExperimentConfig.from_dict(json.load(f))
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise RunDirectoryError(f"--resume: {paths.config} is not a readable run config "
                                    f"({str(error).splitlines()[0]})") from None
        differing = stored.differences(config)
        if differing:
            details = ", ".join(f"{k}={getattr(stored, k)!r}→{getattr(config, k)!r}" for k in differing)
            raise RunDirectoryError(f"--resume: settings differ from the stored run at {paths.root}: "
                                    f"{details}; only {', '.join(RESUMABLE_CHANGES)} may change.")
    elif exists and not overwrite:
        raise RunDirectoryError(f"run directory {paths.root} already holds a run; "
                                "pass --resume to continue it or --overwrite to replace it.")
    return paths


def check_writable(directory: str) -> None:
    """`--output_dir` can be created and written (its first existing ancestor is a writable
    directory), checked before anything is loaded or written."""
    probe = os.path.abspath(directory)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise RunDirectoryError(f"--output_dir={directory}: {probe} is a file, not a directory.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"--output_dir={directory}: {probe} is not writable.")
