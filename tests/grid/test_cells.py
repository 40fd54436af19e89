"""A cell's status from its run directory and the manifest's last outcome."""

import json

import pytest

from orchestration.grid import cells


def make_run(tmp_path, summary=None, config=True):
    directory = tmp_path / "run"
    directory.mkdir()
    if config:
        (directory / "config.json").write_text("{}")
    if summary is not None:
        (directory / "summary.json").write_text(json.dumps(summary))
    return str(directory)


@pytest.mark.parametrize("summary, config, last, expected", [
    (None, False, None, cells.CellStatus.NEW),                      # nothing written yet
    (None, True, None, cells.CellStatus.PARTIAL),                   # killed before the summary
    ({"status": "running", "rounds_completed": 2}, True, None, cells.CellStatus.PARTIAL),
    ({"status": "complete", "rounds_completed": 4}, True, None, cells.CellStatus.COMPLETE),
    ({"status": "complete", "rounds_completed": 4}, True, "error", cells.CellStatus.COMPLETE),
    ({"status": "complete", "rounds_completed": 3}, True, None, cells.CellStatus.PARTIAL),
    ({"status": "failed", "rounds_completed": 2}, True, "failed", cells.CellStatus.FAILED),
    ({"status": "failed", "rounds_completed": 2}, True, "error", cells.CellStatus.PARTIAL),
    ({"status": "failed", "rounds_completed": 2}, True, None, cells.CellStatus.PARTIAL),
])
def test_cell_status(tmp_path, summary, config, last, expected):
    assert cells.cell_status(make_run(tmp_path, summary, config), 4, last) == expected


def test_unreadable_summary_is_partial(tmp_path):
    directory = make_run(tmp_path)
    (tmp_path / "run" / "summary.json").write_text('{"status": "compl')  # cut short
    assert cells.cell_status(directory, 4) == cells.CellStatus.PARTIAL
    assert cells.rounds_done(directory) == 0


def test_manifest_round_trip(tmp_path):
    assert cells.read_manifest(str(tmp_path)) == {}
    cells.write_manifest(str(tmp_path), {"cells": [{"id": "a"}]})
    assert cells.read_manifest(str(tmp_path)) == {"cells": [{"id": "a"}]}
