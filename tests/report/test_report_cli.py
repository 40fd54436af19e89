"""pipelines.report on hand-made run directories: files, tables, plots, renderers, errors."""

import math
import os
import stat

import pandas as pd
import pytest

from pipelines import report
from tests.report.helpers import write_manifest, write_run
from orchestration.report import render


@pytest.fixture()
def grid(tmp_path):
    """aggregator × attack × f × 2 seeds (q = 0.9), final accuracies chosen by hand."""
    cells = []
    accuracy = {("mean", "none"): 0.9, ("mean", "backdoor"): 0.5, ("fedlaw", "none"): 0.88,
                ("fedlaw", "backdoor"): 0.8}
    for aggregator in ("mean", "fedlaw"):
        for attack in ("none", "backdoor"):
            for f in (0.1, 0.3):
                for q in (0.9,):
                    for seed in (0, 1):
                        name = f"{aggregator}_{attack}_{f}_{q}_{seed}"
                        final = accuracy[(aggregator, attack)] - f / 10 - (q - 0.5) / 10 + seed / 100
                        extra = {}
                        if aggregator == "fedlaw":
                            extra["detection"] = [(math.nan, 0.0), (1.0, 0.5), (1.0, 1.0)]
                            extra["weights"] = [[0.25] * 4, [0.3, 0.1, 0.3, 0.3],
                                                [1 / 3, 0.0, 1 / 3, 1 / 3]]
                        if attack == "backdoor":
                            extra["asr"] = [0.5, 0.4, 0.3 if aggregator == "fedlaw" else 0.9]
                        write_run(tmp_path, name, [0.3, 0.6, final], seed=seed, partition="q", q=q,
                                  byzantine_fraction=f, attack=f"{attack}:target=0"
                                  if attack == "backdoor" else attack,
                                  aggregator=f"{aggregator}:x=1", **extra)
                        cells.append((name, {"aggregator": aggregator, "attack": attack,
                                             "byzantine_fraction": f, "q": q, "seed": seed}))
    write_manifest(tmp_path, cells)
    return tmp_path


def test_report_writes_results_tables_and_plots(grid, capsys):
    assert report.main(["report", str(grid)]) == 0
    results = pd.read_csv(grid / "results.csv")
    assert len(results) == 16
    assert set(pd.read_parquet(grid / "results.parquet")["run_name"]) == set(results["run_name"])
    assert len(pd.read_csv(grid / "rounds.csv")) == 16 * 3
    markdown = (grid / "report" / "report.md").read_text()
    # mean, no attack, f = 0.1: seeds 0.85 and 0.86 -> 0.855 ± 0.007 (fedlaw: 0.835 ± 0.007).
    assert "### final_accuracy, mean ± std over seeds\n" in markdown
    assert "**0.855 ± 0.007**" in markdown and " 0.835 ± 0.007 |" in markdown
    assert "final_accuracy − aggregator=mean, paired by seed" in markdown
    assert "worst case over attacks" in markdown
    assert "detection_recall, mean ± std over seeds" in markdown
    assert "final_attack_success_rate" in markdown
    plots = sorted(os.listdir(grid / "report" / "plots"))
    for name in ("accuracy_vs_round", "heatmap_attack=none", "heatmap_attack=backdoor",
                 "backdoor_asr"):
        assert f"{name}.png" in plots and f"{name}.svg" in plots, plots
    assert any(p.startswith("fedlaw_") and p.endswith(".png") for p in plots)
    tex = (grid / "report" / "tables.tex").read_text()
    assert r"\bfseries 0.855 $\pm$ 0.007" in tex and r"\begin{document}" in tex
    html = (grid / "report" / "report.html").read_text()
    assert "font-weight: bold" in html and "plots/heatmap_attack=none.png" in html
    assert "16 runs" in capsys.readouterr().out
    # Every result file is readable by others as far as the umask allows (not 0600).
    umask = os.umask(0)
    os.umask(umask)
    written = [grid / "results.csv", grid / "results.parquet", grid / "report" / "report.md",
               grid / "report" / "tables.tex", grid / "report" / "plots" / "accuracy_vs_round.png"]
    for path in written:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path


def test_curves_draw_one_line_per_row_setting(tmp_path):
    """--rows=algorithm (a table axis binding aggregator and attack_message): one figure per
    dataset with a line per algorithm, not one figure per algorithm."""
    cells = []
    for dataset in ("mnist", "digits"):
        for algorithm, aggregator, message in (("pdmm", "pdmm", "delta"), ("fedavg", "mean", "model")):
            for seed in (0, 1):
                name = f"{dataset}_{algorithm}_{seed}"
                write_run(tmp_path, name, [0.3, 0.5 + seed / 10], seed=seed, dataset=dataset,
                          aggregator=aggregator, attack_message=message, attack="sign_flip")
                cells.append((name, {"dataset": dataset, "algorithm": algorithm, "seed": seed}))
    write_manifest(tmp_path, cells)
    assert report.main(["report", str(tmp_path), "--rows=algorithm", "--columns=dataset",
                        "--baseline=algorithm=fedavg"]) == 0
    curves = sorted(p for p in os.listdir(tmp_path / "report" / "plots")
                    if p.startswith("accuracy_vs_round") and p.endswith(".png"))
    assert curves == ["accuracy_vs_round_dataset=digits.png", "accuracy_vs_round_dataset=mnist.png"]


def test_seeds_as_columns_with_a_baseline(grid):
    """One difference per seed (it crashed: the paired differences had lost the seed)."""
    assert report.main(["report", str(grid), "--rows=aggregator,attack,byzantine_fraction",
                        "--columns=seed", "--noplots", "--output", str(grid / "r3")]) == 0
    markdown = (grid / "r3" / "report.md").read_text()
    section = markdown.split("### final_accuracy − aggregator=mean, paired by seed")[1].split("###")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]]
            for line in section.splitlines() if line.startswith("|") and "/" in line}
    # fedlaw − mean at seed s: (0.88 − f/10 − 0.04 + s/100) − (0.9 − f/10 − 0.04 + s/100).
    assert rows["fedlaw / none / 0.1"] == ["-0.02", "-0.02"]
    assert rows["fedlaw / backdoor / 0.3"] == ["0.3", "0.3"]


def test_report_rows_columns_and_baseline_choices(grid):
    assert report.main(["report", str(grid), "--rows=attack", "--columns=aggregator",
                        "--baseline=aggregator=fedlaw", "--noplots", "--output", str(grid / "r2")]) == 0
    markdown = (grid / "r2" / "report.md").read_text()
    assert "attack \\ aggregator" in markdown
    assert "final_accuracy − aggregator=fedlaw" in markdown
    assert not (grid / "r2" / "plots").exists()


def test_abort_test_loss_scores_the_last_accuracy_before_the_loss_limit(tmp_path, capsys):
    write_run(tmp_path, "fedlaw_0", [0.6, 0.75, 0.3], losses=[1.0, 4.0, 12.0], aggregator="fedlaw",
              seed=0)
    write_run(tmp_path, "fedlaw_1", [0.7, 0.65, 0.2], losses=[1.0, 9.5, 30.0], aggregator="fedlaw",
              seed=1, status="running")  # aborted already: counted although still running
    write_run(tmp_path, "mean_0", [0.8, 0.84, 0.85], aggregator="mean", seed=0)
    assert report.main(["report", str(tmp_path), "--abort_test_loss=9", "--noplots",
                        "--columns=seed"]) == 0
    out = capsys.readouterr().out
    assert "test loss > 9 or NaN (2 run(s) aborted)" in out
    results = pd.read_csv(tmp_path / "results.csv").set_index("run_name")
    assert results["final_accuracy"].to_dict() == {"fedlaw_0": 0.75, "fedlaw_1": 0.7,
                                                   "mean_0": 0.85}
    assert results.loc["fedlaw_0", "aborted_round"] == 3
    assert report.main(["report", str(tmp_path), "--abort_test_loss=0", "--noplots"]) == 2
    assert "--abort_test_loss must be a positive loss; got 0.0" in capsys.readouterr().err


@pytest.mark.parametrize("args, expected", [
    (["--rows=bogus"], "--rows: unknown column 'bogus'; settings that vary: aggregator, attack"),
    (["--columns=atack"], "--columns: unknown column 'atack'"),
    (["--metric=accuracy"], "--metric: invalid value 'accuracy'; valid choices: final_accuracy"),
    (["--baseline=mean"], "--baseline must be COLUMN=VALUE"),
    (["--baseline=aggregator=krum"], "--baseline: aggregator='krum' matches no run; valid values: mean, fedlaw"),
    (["--confidence=95"], "--confidence must be in (0, 1); got 95.0"),
    (["--digits=x"], "--digits: expected an integer; got 'x'"),
])
def test_bad_flags_exit_2_with_one_line(grid, capsys, args, expected):
    assert report.main(["report", str(grid), *args]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and expected in line


def test_empty_directory_exits_2(tmp_path, capsys):
    assert report.main(["report", str(tmp_path)]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_renderers_mark_the_best_cell():
    text = pd.DataFrame({"none": ["0.9 ± 0.1", "0.8 ± 0.1"]},
                        index=pd.Index(["mean", "trimmed_mean"], name="aggregator"))
    best = pd.DataFrame({"none": [True, False]}, index=text.index)
    table = render.Table("title_x", text, best, note="50% †")
    markdown = render.markdown(table)
    assert "**0.9 ± 0.1**" in markdown and "| trimmed_mean" in markdown
    latex = render.latex(table)
    assert r"\bfseries 0.9 $\pm$ 0.1" in latex and r"trimmed\_mean" in latex
    assert r"title\_x" in latex and r"50\% $\dagger$" in latex
    page = render.html_page("t", [table], ["plots/a.png"])
    assert "font-weight: bold" in page and "<img src='plots/a.png'" in page


def _one_run(root):
    write_run(root, "a", [0.3, 0.5, 0.7])
    write_manifest(root, [("a", {})])


def _aggregator_by_seed(root):
    cells = []
    for aggregator in ("mean", "median"):
        for seed in (0, 1):
            name = f"{aggregator}_{seed}"
            write_run(root, name, [0.3, 0.5, 0.7 + seed / 100], aggregator=aggregator, seed=seed)
            cells.append((name, {"aggregator": aggregator, "seed": seed}))
    write_manifest(root, cells)


def _one_failed_run(root):
    write_run(root, "a", [0.3, math.nan, math.nan], status="failed", reason="boom")
    write_manifest(root, [("a", {})])


@pytest.mark.parametrize("make", [_one_run, _aggregator_by_seed, _one_failed_run])
def test_report_without_fedlaw_runs_writes_every_file(tmp_path, make, capsys):
    """No FedLAW run and only the aggregator (and seed) varying used to crash in
    plots.fedlaw_figures (IndexError) after writing results.csv but before report.md."""
    make(tmp_path)
    assert report.main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report" / "report.md").exists()
    assert (tmp_path / "report" / "report.html").exists()
    assert "wrote" in capsys.readouterr().out
    if make is not _one_failed_run:
        assert any(p.endswith(".png") for p in os.listdir(tmp_path / "report" / "plots"))


@pytest.mark.parametrize("target, content", [("grid.json", "{broken"),
                                             ("grid.json", '{"cells": [{"axes": {}}]}'),
                                             ("runs/a/summary.json", "\x00\x01 garbage"),
                                             ("runs/a/config.json", "[]"),
                                             ("runs/a/metrics.csv", "x,y\n1,2\n")])
def test_garbage_result_files_exit_2_naming_the_file(tmp_path, capsys, target, content):
    _one_run(tmp_path)
    (tmp_path / target).write_text(content)
    assert report.main(["report", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and str(tmp_path / target) in line
