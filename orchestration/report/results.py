"""Run directories -> tidy pandas DataFrames (reads only config.json, summary.json, metrics.csv).

`load_results(directory)` finds the runs of a grid directory (the cells listed in
`grid.json` when it exists, else every `*/config.json` below `directory`) and
returns

- `results`: one row per run: every config field as a column, plus `heterogeneity`
  (iid, q=0.9, dirichlet α=0.5, natural), the summary (`status`, `reason`,
  `rounds_completed`, `final_test_accuracy`, `best_test_accuracy`, `wall_seconds`,
  `actual_byzantine_fraction`, PDMM's `lambda_p` under a linear attack, ...), `detection_{precision,recall,f1,accuracy}`
  (FedLAW), `final_attack_success_rate` (backdoor: the last evaluated value),
  `diverged` (the run stopped because the model became non-finite) and
  `final_accuracy`: the final test accuracy, with a diverged run scored
  `diverged_score` (default 0: its model is NaN); `final_accuracy_honest_mean`
  likewise for PDMM's honest clients' mean model (NaN for other runs),
  `final_accuracy_node_mean`/`_min` for the honest clients' own models (PDMM, local-only;
  NaN for other runs). With
  `abort_test_loss=X` a run is scored as the FedLAW authors' code scores it: their
  evaluation raises once the test loss exceeds X (9 in their code) or is NaN, so the
  last accuracy they log is that of the evaluation before. `final_accuracy` is then that
  accuracy (`diverged_score` if no evaluation came before), and `aborted_round` the
  round of the first such evaluation (NaN if none; a run that became non-finite aborts
  at its last round). A run trained with `stop_test_loss` is scored by its own limit
  unless `abort_test_loss` is given;
- `rounds`: one row per run and round: `run_name`, the config columns and every
  metrics.csv column.

No TensorFlow here: reports load fast and read only files.
"""

from __future__ import annotations

import glob
import json
import math
import os
from typing import Optional

import pandas as pd

__all__ = ["load_results", "accuracy_before_abort", "breaks_loss_limit", "find_run_dirs",
           "heterogeneity_label", "RESULT_COLUMNS", "NotAGridError",
           "UnreadableResultError"]

# Summary fields copied as columns (lists are JSON-encoded), renamed where a config
# field has the same name.
_SUMMARY_FIELDS = {"status": "status", "reason": "reason", "rounds_completed": "rounds_completed",
                   "final_test_accuracy": "final_test_accuracy", "final_test_loss": "final_test_loss",
                   "best_test_accuracy": "best_test_accuracy", "wall_seconds": "wall_seconds",
                   "num_parameters": "num_parameters", "num_clients": "clients_in_run",
                   "actual_byzantine_fraction": "actual_byzantine_fraction",
                   "declared_byzantine_fraction": "declared_fraction_used",
                   "byzantine_ids": "byzantine_ids", "lambda_p": "lambda_p"}
RESULT_COLUMNS = ("final_accuracy", "aborted_round", "final_accuracy_honest_mean",
                  "final_accuracy_node_mean", "final_accuracy_node_min",
                  "final_test_accuracy", "best_test_accuracy", "final_test_loss",
                  "detection_precision", "detection_recall", "detection_f1", "detection_accuracy",
                  "final_attack_success_rate", "wall_seconds")
# A non-finite model is the run's own verdict (orchestration.training.NonFiniteModelError).
_DIVERGED_MARK = "non-finite"


def _is_pdmm(config) -> bool:
    return str(config.get("aggregator", "")).split(":", 1)[0] == "pdmm"


class UnreadableResultError(ValueError):
    """A result file (grid.json, config.json, summary.json, metrics.csv) that cannot be read;
    the message names it."""


class NotAGridError(ValueError):
    """The directory holds no run (CLI: exit 2)."""


def heterogeneity_label(partition: str, q: float, alpha: float) -> str:
    if partition == "q":
        return f"q={q:g}"
    if partition == "dirichlet":
        return f"dirichlet α={alpha:g}"
    return str(partition)


def find_run_dirs(directory: str) -> list[tuple[str, dict]]:
    """(run directory, axis labels) of the grid's runs: `grid.json`'s cells if present,
    else every run below `directory` (with no labels)."""
    manifest_path = os.path.join(directory, "grid.json")
    if os.path.exists(manifest_path):
        manifest = _read_json(manifest_path)
        try:
            dirs = [(os.path.join(directory, "runs", c["run_name"]), c.get("axes", {}))
                    for c in manifest.get("cells", [])]
        except (AttributeError, KeyError, TypeError):
            raise UnreadableResultError(f"{manifest_path} is not a grid manifest (it needs "
                                        f"cells with a run_name)") from None
        return [(d, axes) for d, axes in dirs if os.path.exists(os.path.join(d, "config.json"))]
    found = sorted(glob.glob(os.path.join(directory, "**", "config.json"), recursive=True))
    return [(os.path.dirname(path), {}) for path in found
            if os.path.exists(os.path.join(os.path.dirname(path), "summary.json"))]


def _axis_names(run_dirs) -> set:
    return {name for _, axes in run_dirs for name in axes}


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UnreadableResultError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise UnreadableResultError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def _read_metrics(path: str) -> pd.DataFrame:
    if not os.path.exists(path):
        return pd.DataFrame({"round": []})
    try:
        metrics = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame({"round": []})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise UnreadableResultError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if "round" not in metrics:
        raise UnreadableResultError(f"{path} has no round column; it is not a metrics file")
    return metrics


def _last_valid(frame: pd.DataFrame, column: str) -> float:
    if column not in frame:
        return math.nan
    values = frame.sort_values("round")[column].dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def _accuracy(value, diverged: bool, diverged_score):
    """The scored accuracy: `diverged_score` for a diverged run, else the value (NaN if none)."""
    if diverged:
        return diverged_score
    return math.nan if value is None else float(value)


def breaks_loss_limit(test_loss: float, limit: Optional[float]) -> bool:
    """True if `limit` is set and the test loss exceeds it or is not finite (NaN)."""
    return limit is not None and not test_loss <= limit


def accuracy_before_abort(metrics: pd.DataFrame, limit: float, *, diverged: bool = False
                          ) -> tuple[float, float]:
    """(aborted round, last test accuracy before it) of one run's metrics under the rule
    "stop at the first evaluation whose test loss exceeds `limit` or is not finite".
    (NaN, NaN) when no evaluation breaks the rule and the run did not diverge; the
    accuracy is NaN when nothing was evaluated before the abort."""
    if not len(metrics):
        return math.nan, math.nan
    evaluated = metrics.dropna(subset=["test_accuracy"]).sort_values("round")
    broken = evaluated[evaluated["test_loss"].map(lambda loss: breaks_loss_limit(loss, limit))]
    if len(broken):
        aborted = float(broken["round"].iloc[0])
        evaluated = evaluated[evaluated["round"] < aborted]
    elif diverged:  # the model became non-finite after its last evaluation
        aborted = float(metrics["round"].max())
    else:
        return math.nan, math.nan
    return aborted, float(evaluated["test_accuracy"].iloc[-1]) if len(evaluated) else math.nan


def load_results(directory: str, *, diverged_score: Optional[float] = 0.0,
                 abort_test_loss: Optional[float] = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, rounds) DataFrames of every run of `directory` (see the module doc)."""
    run_dirs = find_run_dirs(directory)
    if not run_dirs:
        raise NotAGridError(f"{directory}: no runs found (expected grid.json or */config.json); "
                            "run pipelines.compare first.")
    rows, round_frames = [], []
    config_columns: list[str] = []
    for run_dir, axes in run_dirs:
        config = _read_json(os.path.join(run_dir, "config.json"))
        summary_path = os.path.join(run_dir, "summary.json")
        summary = _read_json(summary_path) if os.path.exists(summary_path) else {"status": "missing"}
        for key in config:
            if key not in config_columns:
                config_columns.append(key)
        row = dict(config)
        row["run_dir"] = run_dir
        row["heterogeneity"] = heterogeneity_label(config.get("partition", "iid"),
                                                   config.get("q", math.nan),
                                                   config.get("alpha", math.nan))
        # Tables show settings as the grid wrote them ("median", not its canonical spec
        # "median:..."); the canonical value stays in <field>_resolved.
        for name, label in axes.items():
            if name in config and isinstance(config[name], str) and label != config[name]:
                row[f"{name}_resolved"] = config[name]
            row[name] = label
        for key, column in _SUMMARY_FIELDS.items():
            if key in summary:
                value = summary[key]
                row[column] = json.dumps(value) if isinstance(value, (list, dict)) else value
        for key, value in (summary.get("final_detection") or {}).items():
            row[f"detection_{key}"] = value
        metrics_path = os.path.join(run_dir, "metrics.csv")
        metrics = _read_metrics(metrics_path)
        if len(metrics):
            metrics = metrics[metrics["round"] <= summary.get("rounds_completed", math.inf)].copy()
            metrics.insert(0, "run_name", config["run_name"])
            round_frames.append(metrics)
        row["final_attack_success_rate"] = _last_valid(metrics, "backdoor/attack_success_rate")
        row["diverged"] = (summary.get("status") == "failed"
                           and _DIVERGED_MARK in str(summary.get("reason", "")))
        scoring = (row["diverged"], diverged_score)
        row["final_accuracy"] = _accuracy(summary.get("final_test_accuracy"), *scoring)
        limit = abort_test_loss if abort_test_loss is not None else config.get("stop_test_loss")
        if limit is not None:
            aborted, before = accuracy_before_abort(metrics, limit, diverged=row["diverged"])
            row["aborted_round"] = aborted
            if not math.isnan(aborted):
                row["final_accuracy"] = diverged_score if math.isnan(before) else before
        if _is_pdmm(config):  # other runs: NaN
            row["final_accuracy_honest_mean"] = _accuracy(
                summary.get("final_test_accuracy_honest_mean"), *scoring)
        for nodes in ("node_mean", "node_min"):  # runs whose clients keep their own models
            if summary.get(f"final_test_accuracy_{nodes}") is not None:
                row[f"final_accuracy_{nodes}"] = _accuracy(
                    summary[f"final_test_accuracy_{nodes}"], *scoring)
        rows.append(row)
    results = pd.DataFrame(rows)
    for column in RESULT_COLUMNS:
        if column not in results:
            results[column] = math.nan
    results = results.reset_index(drop=True)  # grid order (the manifest's), else by path
    keys = ["run_name"] + [c for c in config_columns if c != "run_name"] + [
        c for c in results.columns if c not in config_columns and c in _axis_names(run_dirs)
        or c == "heterogeneity"]
    if round_frames:
        rounds = pd.concat(round_frames, ignore_index=True)
        rounds = results[keys].merge(rounds, on="run_name", how="right")
        order = {name: i for i, name in enumerate(results["run_name"])}  # the grid's order
        rounds = rounds.sort_values(["run_name", "round"], key=lambda c: c.map(order) if
                                    c.name == "run_name" else c, kind="stable").reset_index(drop=True)
    else:
        rounds = pd.DataFrame(columns=keys + ["round"])
    return results, rounds
