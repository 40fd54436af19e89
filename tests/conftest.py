"""Shared fixtures: one TFF execution context (one worker) for the whole session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every process this session starts (TFF workers included) inherits this marker, so the
# no-surviving-worker checks (tests/workers.py) ignore other jobs' workers on the machine.
# Under pytest-xdist (`make test` runs two processes) each worker process is a session of
# its own: it sees only the workers it started.
os.environ.setdefault("TFF_BYZ_TEST_SESSION", f"{os.getpid()}")
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["TFF_BYZ_TEST_SESSION"] += f"-{os.environ['PYTEST_XDIST_WORKER']}"

import pathlib  # noqa: E402

import hypothesis  # noqa: E402
import pytest  # noqa: E402

# Property tests draw the same examples every run, so CI is reproducible.
# `TFF_BYZ_HYPOTHESIS=explore` draws fresh random examples (finds rare edge cases).
hypothesis.settings.register_profile("reproducible", derandomize=True, database=None)
hypothesis.settings.register_profile("explore")
hypothesis.settings.load_profile(os.environ.get("TFF_BYZ_HYPOTHESIS", "reproducible"))

# Importing tff_byz.context registers the atexit release of TFF's default context even in
# test files that never open a context (otherwise TFF prints a harmless error at exit).
from tff_byz.context import ExecutionContext  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("TFF_BYZ_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tff_context():
    """The session's TFF context; tests that execute computations request it."""
    with ExecutionContext() as context:
        yield context


@pytest.fixture(scope="session")
def shared_data_dir():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set TFF_BYZ_DATA_DIR)")
    return str(SHARED_DATA)


# The files that take longest, started first: `make test` hands whole files to its two
# processes in collection order, so a long file collected last would run alone at the end.
LONGEST_FILES = ("tests/orchestration/test_interruptions.py", "tests/test_training.py",
                 "tests/fedlaw/test_end_to_end.py", "tests/grid/test_compare_end_to_end.py",
                 "tests/pdmm/test_end_to_end.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        path = pathlib.Path(str(item.path)).relative_to(REPO).as_posix()
        return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)
    items.sort(key=rank)  # stable: each file keeps its own order
