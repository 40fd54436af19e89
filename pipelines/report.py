"""Tables and plots of a grid: `python -m pipelines.report DIR`.

    --rows=aggregator                    table rows (columns of results.csv)
    --columns=attack,byzantine_fraction  table columns (default: those of the two that vary)
    --metric=final_accuracy              the value tabulated (see results.csv's columns)
    --baseline=aggregator=mean           reference of the paired differences
    --confidence=0.95  --digits=3  --diverged_score=0  --plots/--noplots  --output=DIR/report
    --abort_test_loss=9                  score runs as the FedLAW authors' code does: a run
                                         ends at its first evaluation with test loss > 9 or
                                         NaN, and scores the accuracy of the one before
                                         (runs trained with --stop_test_loss: by default)

Reads only the run files (`orchestration.report.results`) and writes
DIR/results.csv + .parquet (one row per run: config columns + final metrics),
DIR/rounds.csv + .parquet (one row per run and round), and under --output:
report.md, report.html, tables.tex (mean ± std and mean [95 % CI] over seeds, best
per column in bold, paired differences against the baseline, worst case over
attacks per aggregator, FedLAW detection and backdoor success when present) and
plots/*.png|svg. Groups are formed by every setting that varies across the runs;
those not in rows or columns split the tables (one per setting). Exit codes: 0
written; 2 bad flag or no runs in DIR (one line on stderr).
"""

from __future__ import annotations

import glob
import os
import sys

import pandas as pd

from orchestration.report import plots, render, results as results_lib, stats
from pipelines import cli
from tff_byz import files

# Columns that never define a group: they say where or which run, not what was run.
_NOT_KEYS = {"seed", "run_name", "output_dir", "data_dir", "tff_workers", "run_dir"}


def _parser() -> cli.Parser:
    parser = cli.Parser("python -m pipelines.report", usage="DIR [--flag=value ...]")
    parser.add_argument("directory", help="a pipelines.compare --output_dir")
    parser.add_argument("--output", default=None, help="report directory (default: DIR/report)")
    parser.add_argument("--rows", default="aggregator")
    parser.add_argument("--columns", default=None)
    parser.add_argument("--metric", default="final_accuracy")
    parser.add_argument("--baseline", default=None, help="COLUMN=VALUE (default: aggregator=mean)")
    parser.add_argument("--confidence", type=cli.number, default=0.95)
    parser.add_argument("--digits", type=cli.integer, default=3)
    parser.add_argument("--diverged_score", type=cli.number, default=0.0,
                        help="final accuracy given to a run whose model became non-finite")
    parser.add_argument("--abort_test_loss", type=cli.number, default=None,
                        help="score each run by its last test accuracy before the first "
                             "evaluation whose test loss exceeds this or is NaN")
    cli.add_switch(parser, "plots", True, "write the plots")
    return parser


def _write_atomic(frame: pd.DataFrame, path: str) -> None:
    with files.replaced_atomically(path) as tmp:
        if path.endswith(".parquet"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


def _write_text(text: str, path: str) -> None:
    files.write_text_atomic(path, text)


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing types (e.g. None and str) as strings, for parquet."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column] if v is not None and v == v}
            if len(kinds) > 1:
                frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame


def _determined(frame: pd.DataFrame, by: list, column: str) -> bool:
    """True if `column` takes one value within every group of `by`."""
    return bool(frame.astype({c: str for c in by + [column]}).groupby(by)[column]
                .nunique(dropna=False).max() <= 1)


def group_keys(results: pd.DataFrame) -> list[str]:
    """Settings that vary across the runs. A config field fixed by a label column
    (`heterogeneity`, or a table axis of the grid such as `algorithm`) gives way to it."""
    candidates = [c for c in results.columns if c not in _NOT_KEYS and not c.endswith("_resolved")
                  and c not in results_lib.RESULT_COLUMNS]
    config_end = candidates.index("status") if "status" in candidates else len(candidates)
    candidates = candidates[:config_end]
    keys = stats.varying_columns(results, candidates)
    columns = list(results.columns)
    config = set(columns[:columns.index("run_dir")]) if "run_dir" in columns else set()
    labels = [k for k in keys if k not in config]
    return [k for k in keys if k in labels or not any(
        _determined(results, [label], k) for label in labels)]


def facet_keys(results: pd.DataFrame, keys: list, shown: list) -> list[str]:
    """Keys that split the tables: those not fixed by the rows and columns shown."""
    return [k for k in keys if k not in shown and not (shown and _determined(results, shown, k))]


def build_tables(results: pd.DataFrame, *, rows, columns, metric, baseline, confidence, digits,
                 pm="±"):
    """Every report table (a list of `render.Table`) from the results frame."""
    keys = group_keys(results)
    facets = facet_keys(results, keys, rows + columns)
    tables = []
    note = ("† k: k of the seeds diverged (non-finite model), scored "
            f"{results.loc[results['diverged'], metric].iloc[0]:g}"
            if results["diverged"].any() and metric == "final_accuracy" else "")
    for label, group in stats.facet_groups(results, facets):
        suffix = f" ({label})" if label else ""
        summary = stats.summarize(group, rows + columns, metric, confidence=confidence,
                                  bounds=stats.bounds_of(metric))
        higher = metric != "final_attack_success_rate"
        for style, what in (("std", "mean ± std"), ("ci", f"mean [{confidence:.0%} CI]")):
            text, best = stats.pivot(summary, rows, columns, style=style, digits=digits,
                                     higher_is_better=higher, pm=pm)
            tables.append(render.Table(f"{metric}, {what} over seeds{suffix}", text, best, note))
        if baseline is not None and set(baseline) <= set(group.columns):
            differences = stats.paired_differences(
                group, metric, baseline, keys=list(dict.fromkeys(rows + columns + ["seed"])),
                confidence=confidence, per_pair="seed" in rows + columns)
            if not differences.empty:
                text, _ = stats.pivot(differences, rows, columns, style="ci", digits=digits)
                base = ", ".join(f"{k}={v}" for k, v in baseline.items())
                tables.append(render.Table(
                    f"{metric} − {base}, paired by seed, mean [{confidence:.0%} CI]{suffix}", text))
        if "attack" in group and "attack" in rows + columns:
            by = [k for k in rows + columns if k != "attack"]
            worst = stats.worst_case(summary, over="attack", by=by, higher_is_better=higher)
            if not worst.empty:
                worst["value"] = [stats.format_cell(r, "ci", digits) for r in worst.to_dict("records")]
                text = worst.set_index(by)[["worst_attack", "value"]] if by else worst[
                    ["worst_attack", "value"]]
                tables.append(render.Table(f"worst case over attacks, {metric}, mean "
                                           f"[{confidence:.0%} CI]{suffix}", text))
        for extra, higher_extra in (("detection_precision", True), ("detection_recall", True),
                                    ("final_attack_success_rate", False)):
            if extra != metric and extra in group and group[extra].notna().any():
                present = group.dropna(subset=[extra])
                extra_summary = stats.summarize(present, rows + columns, extra, confidence=confidence,
                                                bounds=stats.bounds_of(extra))
                text, best = stats.pivot(extra_summary, rows, columns, style="std", digits=digits,
                                         higher_is_better=higher_extra)
                tables.append(render.Table(f"{extra}, mean ± std over seeds{suffix}", text, best))
    return tables, facets


def _curve_hue(results, rows, keys, panels):
    """The curves' line setting: the table's single row setting (e.g. an `algorithm` table
    axis) when it is neither a panel nor the aggregator, else the aggregator; and the
    settings it determines (the algorithm's aggregator), which then split no figure."""
    if len(rows) != 1 or rows[0] not in keys or rows[0] in panels or rows[0] == "aggregator":
        return "aggregator", set()
    hue = rows[0]
    grouped = results.astype({k: str for k in keys}).groupby(hue)
    return hue, {k for k in keys if k != hue and grouped[k].nunique().max() <= 1}


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args, code = cli.parse_command_line(_parser(), argv[1:], __doc__)
    if args is None:
        return code
    if not 0 < args.confidence < 1:
        return cli.error(f"--confidence must be in (0, 1); got {args.confidence}.")
    if args.digits < 0:
        return cli.error(f"--digits must be >= 0; got {args.digits}.")
    if args.abort_test_loss is not None and not args.abort_test_loss > 0:
        return cli.error(f"--abort_test_loss must be a positive loss; got {args.abort_test_loss}.")
    try:
        results, rounds = results_lib.load_results(args.directory,
                                                   diverged_score=args.diverged_score,
                                                   abort_test_loss=args.abort_test_loss)
    except (results_lib.NotAGridError, results_lib.UnreadableResultError) as error:
        return cli.error(str(error))

    keys = group_keys(results)
    valid = ", ".join(keys) or "(no setting varies)"
    rows = [c for c in args.rows.split(",") if c]
    if args.columns is None:
        columns = [c for c in ("attack", "byzantine_fraction") if c in keys and c not in rows]
    else:
        columns = [c for c in args.columns.split(",") if c]
    for flag, names in (("rows", rows), ("columns", columns)):
        for name in names:
            if name not in results.columns:
                return cli.error(f"--{flag}: unknown column {name!r}; settings that vary: {valid}.")
    if not rows:
        return cli.error(f"--rows: give at least one column; settings that vary: {valid}.")
    metrics = [c for c in results_lib.RESULT_COLUMNS if results[c].notna().any()]
    if args.metric not in results.columns or args.metric not in metrics:
        return cli.error(f"--metric: invalid value {args.metric!r}; valid choices: {', '.join(metrics)}.")
    baseline = None
    if args.baseline is not None:
        column, sep, value = args.baseline.partition("=")
        if not sep or column not in results.columns:
            return cli.error(f"--baseline must be COLUMN=VALUE with a column of results.csv, e.g. "
                          f"aggregator=mean; got {args.baseline!r}.")
        present = list(dict.fromkeys(results[column].astype(str)))
        if value not in present:
            return cli.error(f"--baseline: {column}={value!r} matches no run; valid values: "
                          f"{', '.join(present)}.")
        baseline = {column: results[column][results[column].astype(str) == value].iloc[0]}
    elif "aggregator" in rows and results["aggregator"].nunique() > 1:
        aggregators = list(dict.fromkeys(results["aggregator"]))
        baseline = {"aggregator": "mean" if "mean" in aggregators else aggregators[0]}

    for frame, name in ((results, "results"), (rounds, "rounds")):
        _write_atomic(frame, os.path.join(args.directory, f"{name}.csv"))
        _write_atomic(_parquet_safe(frame), os.path.join(args.directory, f"{name}.parquet"))

    # A run aborted by --abort_test_loss has its score even while it is still running.
    finished = results["status"].eq("complete") | results["diverged"] | results[
        "aborted_round"].notna()
    unfinished = results[~finished]
    table_results = results[finished]
    out = args.output or os.path.join(args.directory, "report")
    os.makedirs(out, exist_ok=True)
    common = dict(rows=rows, columns=columns, metric=args.metric, baseline=baseline,
                  confidence=args.confidence, digits=args.digits)
    tables, facets = build_tables(table_results, **common)
    header = (f"{len(table_results)} runs in {args.directory}; settings that vary: {valid}; "
              f"{results['seed'].nunique()} seed(s)")
    aborted = int(table_results["aborted_round"].notna().sum())
    if args.abort_test_loss is not None or aborted:
        limit = (f"{args.abort_test_loss:g}" if args.abort_test_loss is not None
                 else "the run's stop_test_loss")
        header += (f"; final_accuracy as the last test accuracy before the first evaluation "
                   f"with test loss > {limit} or NaN ({aborted} run(s) aborted)")
    if len(unfinished):
        header += (f"; {len(unfinished)} unfinished run(s) left out: "
                   + ", ".join(unfinished["run_name"]))

    images = []
    if args.plots and len(table_results):
        plot_dir = os.path.join(out, "plots")
        for stale in glob.glob(os.path.join(plot_dir, "*.png")) + glob.glob(
                os.path.join(plot_dir, "*.svg")):  # an earlier report's figures
            os.unlink(stale)
        finished_rounds = rounds[rounds["run_name"].isin(table_results["run_name"])]
        panel_rows = "byzantine_fraction" if "byzantine_fraction" in keys else ""
        panel_cols = "attack" if "attack" in keys else ""
        hue, bound = _curve_hue(table_results, rows, keys, (panel_rows, panel_cols))
        other = [k for k in keys if k not in (hue, panel_rows, panel_cols) and k not in bound]
        images += plots.accuracy_curves(finished_rounds, plot_dir, hue=hue, cols=panel_cols,
                                        rows=panel_rows, facets=other, confidence=args.confidence)
        images += plots.heatmaps(table_results, plot_dir, value=args.metric,
                                 facets=[k for k in keys if k not in (
                                     "aggregator", "byzantine_fraction", "heterogeneity")])
        images += plots.fedlaw_figures(table_results, finished_rounds, plot_dir,
                                       facets=[k for k in keys if k != "aggregator"],
                                       confidence=args.confidence)
        backdoor_rows = finished_rounds
        images += plots.backdoor_curves(backdoor_rows, plot_dir, hue=hue, rows=panel_rows,
                                        facets=[k for k in other if k != "attack"],
                                        confidence=args.confidence)
    relative = [os.path.relpath(f"{image}.png", out) for image in images]

    markdown = f"# Report: {args.directory}\n\n{header}\n\n" + "\n".join(
        render.markdown(t) for t in tables)
    if relative:
        markdown += "\n## Plots\n\n" + "\n".join(f"![{p}]({p})" for p in relative) + "\n"
    _write_text(markdown, os.path.join(out, "report.md"))
    _write_text(render.latex_document(tables), os.path.join(out, "tables.tex"))
    _write_text(render.html_page(f"Report: {args.directory}", tables, relative),
                os.path.join(out, "report.html"))
    print(header)
    if tables:
        print(render.markdown(tables[0]))
    print(f"wrote {os.path.join(args.directory, 'results.csv')} (+ .parquet, rounds.csv), "
          f"{out}/report.md, report.html, tables.tex and {len(images)} plot(s) as PNG + SVG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
