"""orchestration.checkpoints: ranges, the metrics rows a checkpoint must agree with, and
signals held back while a checkpoint is written (pure Python: no TFF execution)."""

import os
import signal
import threading
import time

import pytest

from orchestration.checkpoints import (evaluated_rows, metrics_rows, ranges, released_rounds,
                                       signals_deferred)
from orchestration.run_directory import RunPaths


# ---------------------------------------------------------------- ranges

@pytest.mark.parametrize("numbers,text", [
    ([1, 2, 3, 7], "1-3, 7"),
    ([], ""),
    ([5], "5"),
    ([1, 2], "1-2"),
    ([1, 3, 5], "1, 3, 5"),
    ([4, 5, 6, 10, 11], "4-6, 10-11"),
    ([0, 2, 3, 4], "0, 2-4"),
    (range(1, 6), "1-5"),
])
def test_ranges(numbers, text):
    assert ranges(numbers) == text


# ---------------------------------------------------------------- metrics rows

@pytest.fixture
def paths(tmp_path):
    return RunPaths(str(tmp_path))


def _write(paths, text, mode="w"):
    with open(paths.metrics, mode) as f:
        f.write(text)


def test_missing_file(paths):
    assert metrics_rows(paths) is None
    assert released_rounds(paths) == set()
    assert evaluated_rows(paths, 3) is None
    assert not os.path.exists(paths.metrics)  # nothing created


@pytest.mark.parametrize("content", [
    "",  # empty
    "\n\n",  # blank lines only
    "loss,test_accuracy\n0.5,0.9\n",  # header without `round`
    b"\xff\xfe\xfa\x00round\n",  # not UTF-8
])
def test_rowless_files_are_removed(paths, content):
    _write(paths, content, "wb" if isinstance(content, bytes) else "w")
    assert metrics_rows(paths) is None
    assert not os.path.exists(paths.metrics)


@pytest.mark.parametrize("call,expected", [
    (released_rounds, set()),
    (lambda p: evaluated_rows(p, 5), None),
])
def test_rowless_file_removed_by_every_reader(paths, call, expected):
    _write(paths, "loss\n1.0\n")
    assert call(paths) == expected
    assert not os.path.exists(paths.metrics)


def test_header_with_round_but_no_rows_is_kept(paths):
    _write(paths, "round,test_accuracy\n")
    rows = metrics_rows(paths)
    assert rows is not None and len(rows) == 0 and list(rows.columns) == ["round", "test_accuracy"]
    assert released_rounds(paths) == set()
    assert evaluated_rows(paths, 3) is None
    assert os.path.exists(paths.metrics)


def test_metrics_rows_reads_the_file(paths):
    _write(paths, "round,train_loss\n1,0.5\n2,0.25\n")
    rows = metrics_rows(paths)
    assert list(rows["round"]) == [1, 2]
    assert list(rows["train_loss"]) == [0.5, 0.25]
    assert os.path.exists(paths.metrics)


def test_released_rounds(paths):
    _write(paths, "round,train_loss\n3,0.5\n1,0.4\n2,0.3\n5,0.2\n")
    rounds = released_rounds(paths)
    assert rounds == {1, 2, 3, 5}
    assert all(type(r) is int for r in rounds)


def test_released_rounds_skips_rows_without_a_round(paths):
    _write(paths, "round,train_loss\n1,0.5\n,0.4\n4,0.3\n")
    assert released_rounds(paths) == {1, 4}


EVALUATED = ("round,train_loss,test_loss,test_accuracy\n"
             "4,0.1,0.4,0.8\n"
             "1,0.5,1.0,0.5\n"
             "2,0.4,,\n"
             "3,0.3,0.6,0.7\n"
             "5,0.2,0.3,0.9\n")


def test_evaluated_rows_drop_unevaluated_and_later_rounds(paths):
    _write(paths, EVALUATED)
    rows = evaluated_rows(paths, 4)
    assert list(rows["round"]) == [1, 3, 4]  # sorted; round 2 not evaluated, 5 after the checkpoint
    assert list(rows["test_accuracy"]) == [0.5, 0.7, 0.8]
    assert list(rows["test_loss"]) == [1.0, 0.6, 0.4]
    assert list(evaluated_rows(paths, 5)["round"]) == [1, 3, 4, 5]
    assert list(evaluated_rows(paths, 1)["round"]) == [1]
    assert list(evaluated_rows(paths, 2)["round"]) == [1]


def test_evaluated_rows_none_when_nothing_qualifies(paths):
    _write(paths, "round,test_loss,test_accuracy\n1,,\n2,0.5,0.9\n")
    assert evaluated_rows(paths, 1) is None  # round 1 not evaluated
    assert list(evaluated_rows(paths, 2)["round"]) == [2]


def test_evaluated_rows_without_rounds_completed_reads_nothing(paths):
    _write(paths, "")  # a reader would remove this file
    assert evaluated_rows(paths, 0) is None
    assert os.path.exists(paths.metrics)


def test_evaluated_rows_without_test_accuracy(paths):
    _write(paths, "round,train_loss\n1,0.5\n")
    assert evaluated_rows(paths, 1) is None
    assert os.path.exists(paths.metrics)  # a file with rows is kept


# ---------------------------------------------------------------- signals_deferred

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture
def recorder():
    """A recording handler on SIGINT/SIGTERM/SIGHUP; the previous handlers restored after."""
    received = []

    def record(signum, _frame):
        received.append(signum)

    previous = {s: signal.signal(s, record) for s in _SIGNALS}
    try:
        yield received, record
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _settle(received, count):
    """Python runs signal handlers between bytecodes of the main thread: wait briefly."""
    deadline = time.monotonic() + 2.0
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_signal_in_block_is_delivered_after_it(recorder):
    received, record = recorder
    with signals_deferred():
        assert signal.getsignal(signal.SIGINT) is not record
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert received == []  # held back
    _settle(received, 1)
    assert received == [signal.SIGINT]
    for signum in _SIGNALS:
        assert signal.getsignal(signum) is record  # restored


def test_only_the_first_signal_is_redelivered(recorder):
    received, _ = recorder
    with signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert received == []
    _settle(received, 1)
    time.sleep(0.05)
    assert received == [signal.SIGTERM]


def test_no_signal_nothing_delivered(recorder):
    received, record = recorder
    with signals_deferred():
        pass
    time.sleep(0.05)
    assert received == []
    assert signal.getsignal(signal.SIGHUP) is record


def test_signal_outside_block_is_not_deferred(recorder):
    received, _ = recorder
    os.kill(os.getpid(), signal.SIGHUP)
    _settle(received, 1)
    assert received == [signal.SIGHUP]


def test_exception_in_block_still_restores_and_redelivers(recorder):
    received, record = recorder
    with pytest.raises(RuntimeError, match="boom"):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
            raise RuntimeError("boom")
    _settle(received, 1)
    assert received == [signal.SIGHUP]
    assert signal.getsignal(signal.SIGINT) is record


def test_outside_the_main_thread_nothing_is_swapped(recorder):
    _, record = recorder
    seen = []

    def body():
        with signals_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [record]


def test_a_line_that_does_not_parse_drops_only_that_line(paths, capsys):
    """A cut or garbage line loses that line alone, not every released round."""
    with open(paths.metrics, "w") as f:
        f.write("round,a\n1,2.5\n2,3\n3,4,5\n4,6\n")
    rows = metrics_rows(paths)
    assert rows["round"].tolist() == [1, 2, 4] and rows["a"].tolist() == [2.5, 3.0, 6.0]
    assert "dropped 1 line(s) that do not parse" in capsys.readouterr().err
    with open(paths.metrics) as f:  # rewritten with the readable rows, read back cleanly
        assert f.read() == "round,a\n1,2.5\n2,3.0\n4,6.0\n"
    assert released_rounds(paths) == {1, 2, 4}
