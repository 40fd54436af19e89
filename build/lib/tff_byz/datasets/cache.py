"""On-disk cache of decoded dataset arrays (`.npz`), keyed by the source files.

Decoding some sources is slow (CIFAR-10's `.tar.xz` takes ~20 s, LEAF's 94 MB of
JSON ~5 s), so loaders keep the decoded arrays in an uncompressed `.npz` (fast
to read) under `$TFF_BYZ_CACHE` (default `~/.cache/tff_byz`). The cache key is
derived from each source file's absolute path, size and mtime plus a format
version, so replacing a source file or changing a reader invalidates it.
Writes go to a temporary file in the cache directory followed by `os.replace`,
so concurrent runs never see a half-written cache file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from tff_byz import files

__all__ = ["CACHE_ENV", "cache_root", "cached_path", "load_npz", "save_npz_atomic"]

CACHE_ENV = "TFF_BYZ_CACHE"

_logger = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`cache_dir` if given, else `$TFF_BYZ_CACHE`, else `~/.cache/tff_byz`."""
    if cache_dir is not None:
        return pathlib.Path(cache_dir).expanduser()
    return pathlib.Path(
        os.environ.get(CACHE_ENV, os.path.join("~", ".cache", "tff_byz"))
    ).expanduser()


def cached_path(
    prefix: str,
    sources: Sequence[pathlib.Path],
    *,
    version: str,
    cache_dir: str | os.PathLike | None = None,
) -> pathlib.Path:
    """The cache file for arrays decoded from `sources` by reader `version`."""
    digest = hashlib.sha256(f"{prefix}|{version}\n".encode())
    for source in sources:
        stat = source.stat()
        digest.update(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return cache_root(cache_dir) / f"{prefix}-{digest.hexdigest()[:16]}.npz"


def load_npz(path: pathlib.Path) -> dict[str, np.ndarray] | None:
    """The arrays stored at `path`, or None if there is no usable cache file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # Atomic writes make this unlikely (e.g. a full disk while copying the
        # cache around); decoding again is always correct, so say so and go on.
        _logger.warning("ignoring unreadable cache file %s: %s", path, error)
        return None


def save_npz_atomic(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> bool:
    """Writes `arrays` to `path` atomically; returns False if it could not.

    A cache that cannot be written (read-only home, full disk) only costs time,
    so it is logged as a warning instead of failing the load.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.replaced_atomically(path) as temp_name, open(temp_name, "wb") as stream:
            np.savez(stream, **arrays)
        return True
    except OSError as error:
        _logger.warning("could not write cache file %s: %s", path, error)
        return False
