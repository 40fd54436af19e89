"""Fixtures for the dataset tests: real data when it is there, a skip otherwise.

Real datasets are read from `$TFF_BYZ_DATA_DIR`, else from `shared/data` next
to the repository (`<repo>/../shared/data`), as in tests/conftest.py. Unlike
that file's `shared_data_dir`, `require_data` skips per dataset, naming the
missing path.
"""

import os
import pathlib

import pytest

DATA_DIR_ENV = "TFF_BYZ_DATA_DIR"


def _data_root() -> pathlib.Path:
    if os.environ.get(DATA_DIR_ENV):
        return pathlib.Path(os.environ[DATA_DIR_ENV])
    return pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def require_data():
    """`require_data("mnist/MNIST/raw")` returns the data dir, or skips the test."""
    root = _data_root()

    def require(*relative_paths: str) -> pathlib.Path:
        for relative in relative_paths:
            path = root / relative
            if not path.exists():
                pytest.skip(f"real data not available: {path} missing (set ${DATA_DIR_ENV})")
        return root

    return require
