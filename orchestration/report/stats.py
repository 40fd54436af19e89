"""Statistics over seeds as pure pandas functions (no I/O), on the tidy `results` frame.

- `summarize(frame, by, value)`: n, mean, std (ddof 1), Student-t confidence interval
  of the mean and the number of diverged runs, per group;
- `pivot(summary, rows, columns)`: display strings `mean ± std` or `mean [lo, hi]`,
  and a mask of the best value of each column (highest mean, or lowest);
- `paired_differences(frame, value, baseline)`: value − the baseline's value of the
  same seed and setting, summarised like `summarize` (a paired t interval);
- `worst_case(summary, over="attack")`: per group, the `over` value with the lowest
  (or highest) mean, e.g. each aggregator's worst attack.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

__all__ = ["summarize", "pivot", "paired_differences", "worst_case", "varying_columns",
           "format_cell", "facet_groups"]


def varying_columns(frame: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """The candidate columns (in order) that take more than one value in `frame`."""
    return [c for c in candidates if c in frame and frame[c].astype(str).nunique() > 1]


def facet_groups(frame: pd.DataFrame, facets: Sequence[str]):
    """Yields (label "a=1, b=x", sub-frame) per setting of `facets`, in the frame's order;
    ("", frame) when there are no facets; nothing for an empty frame."""
    if frame.empty:
        return
    if not facets:
        yield "", frame
        return
    for key, group in frame.groupby(list(facets), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        yield ", ".join(f"{f}={_label(v)}" for f, v in zip(facets, key)), group


_RATE_WORDS = ("accuracy", "precision", "recall", "f1", "success_rate")


def bounds_of(metric: str) -> Optional[tuple[float, float]]:
    """(0, 1) for a rate (accuracies, detection precision/recall/F1, attack success), else
    None: the range a confidence interval of `metric` is clipped to."""
    return (0.0, 1.0) if any(word in metric for word in _RATE_WORDS) else None


def summarize(frame: pd.DataFrame, by: Sequence[str], value: str, *,
              confidence: float = 0.95,
              bounds: Optional[tuple[float, float]] = None) -> pd.DataFrame:
    """One row per group of `by`: n, mean, std, sem, ci_low, ci_high, diverged.

    The interval is mean ± t_{(1+c)/2, n−1} · std/√n (NaN when n < 2), clipped to
    `bounds` when given (a rate's interval past 1 says only that 2 seeds are few, as the
    plots' clipped bands do); NaN values are left out (n counts the rest). `diverged`
    counts rows with `diverged` True.
    """
    by = list(by)
    values = frame.dropna(subset=[value])
    grouped = values.groupby(by, sort=False, dropna=False) if by else [((), values)]
    rows = []
    for key, group in grouped:
        key = key if isinstance(key, tuple) else (key,)
        samples = group[value].to_numpy(dtype=float)
        n = len(samples)
        mean = float(np.mean(samples))
        std = float(np.std(samples, ddof=1)) if n > 1 else math.nan
        sem = std / math.sqrt(n) if n > 1 else math.nan
        if n > 1 and sem > 0:
            low, high = scipy_stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
        elif n > 1:  # every seed gave the same value
            low = high = mean
        else:
            low = high = math.nan
        if bounds is not None and not math.isnan(low):
            low, high = max(low, bounds[0]), min(high, bounds[1])
        diverged = int(group["diverged"].sum()) if "diverged" in group else 0
        rows.append(dict(zip(by, key), n=n, mean=mean, std=std, sem=sem, ci_low=float(low),
                         ci_high=float(high), diverged=diverged))
    return pd.DataFrame(rows, columns=by + ["n", "mean", "std", "sem", "ci_low", "ci_high",
                                            "diverged"])


def format_cell(row: Mapping, style: str = "std", digits: int = 3, pm: str = "±",
                dagger: str = "†") -> str:
    """`mean ± std` (style std) or `mean [ci_low, ci_high]` (style ci); a dagger with
    the count marks groups where runs diverged."""
    mean = row["mean"]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    text = f"{mean:.{digits}f}"
    if style == "std" and not math.isnan(row["std"]):
        text += f" {pm} {row['std']:.{digits}f}"
    elif style == "ci" and not math.isnan(row["ci_low"]):
        text += f" [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"
    if row.get("diverged", 0):
        text += f" {dagger}{int(row['diverged'])}"
    return text


def pivot(summary: pd.DataFrame, rows: Sequence[str], columns: Sequence[str], *,
          style: str = "std", digits: int = 3, higher_is_better: bool = True, pm: str = "±",
          dagger: str = "†") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display strings, best mask): rows × columns of the summary's groups.

    The best cell of each column is the one with the highest mean (lowest when
    `higher_is_better` is False); ties are all marked; a single row marks nothing. Row and column order follow
    the summary's (the grid's) order.
    """
    rows, columns = list(rows), list(columns)
    table = summary.copy()
    for column in rows + columns:  # labels as shown: 0.2, not 0.200000
        table[column] = table[column].map(_label)
    table["text"] = [format_cell(r, style, digits, pm, dagger) for r in table.to_dict("records")]
    if not columns:
        table["_"] = "value"
        columns = ["_"]
    text = table.pivot(index=rows, columns=columns, values="text")
    means = table.pivot(index=rows, columns=columns, values="mean")
    row_order = list(dict.fromkeys(map(tuple, table[rows].itertuples(index=False))))
    col_order = list(dict.fromkeys(map(tuple, table[columns].itertuples(index=False))))
    text = text.reindex(index=_index(row_order, rows), columns=_index(col_order, columns))
    means = means.reindex(index=text.index, columns=text.columns)
    best_values = means.max(axis=0) if higher_is_better else means.min(axis=0)
    best = means.eq(best_values, axis=1) & means.notna()
    if len(means.index) < 2:  # nothing to compare with: mark nothing
        best[:] = False
    if columns == ["_"]:
        text.columns = text.columns.get_level_values(0)
        best.columns = text.columns
    return text.fillna(""), best


def _label(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _index(tuples, names):
    if len(names) == 1:
        return pd.Index([t[0] for t in tuples], name=names[0])
    return pd.MultiIndex.from_tuples(tuples, names=names)


def paired_differences(frame: pd.DataFrame, value: str, baseline: Mapping[str, object], *,
                       pair_on: str = "seed", keys: Sequence[str],
                       confidence: float = 0.95, per_pair: bool = False) -> pd.DataFrame:
    """value − baseline value, paired on (`keys` without the baseline's columns, `pair_on`).

    `baseline` names the reference, e.g. {"aggregator": "mean"}: every other value of
    those columns is compared with it at the same setting of the remaining `keys`
    and the same seed. Returns `summarize` of the differences (a paired t interval),
    per group of `keys`, plus `p_value` (two-sided one-sample t test of the
    differences; NaN for fewer than two pairs). Pairs missing either side are left out.
    `per_pair`: one group per `pair_on` value too (a table with seeds as rows or columns).
    """
    baseline_columns = list(baseline)
    others = [k for k in keys if k not in baseline_columns and k != pair_on]
    is_baseline = np.logical_and.reduce(
        [frame[c] == v for c, v in baseline.items()]) if baseline_columns else None
    reference = frame[is_baseline][others + [pair_on, value]].rename(columns={value: "_baseline"})
    candidates = frame[~is_baseline]
    merged = candidates.merge(reference, on=others + [pair_on], how="inner")
    merged["difference"] = merged[value] - merged["_baseline"]
    group_keys = baseline_columns + others + ([pair_on] if per_pair else [])
    summary = summarize(merged, group_keys, "difference", confidence=confidence)
    p_values = []
    for record in summary.to_dict("records"):
        mask = np.logical_and.reduce([merged[k] == record[k] for k in group_keys])
        diffs = merged.loc[mask, "difference"].dropna().to_numpy(dtype=float)
        if len(diffs) > 1 and not np.allclose(diffs, diffs[0], rtol=0, atol=1e-12):
            p_values.append(float(scipy_stats.ttest_1samp(diffs, 0.0).pvalue))
        else:
            p_values.append(math.nan)
    summary["p_value"] = p_values
    return summary


def worst_case(summary: pd.DataFrame, *, over: str = "attack", by: Sequence[str],
               exclude: Sequence[object] = ("none",), higher_is_better: bool = True,
               ) -> pd.DataFrame:
    """Per group of `by`, the row of `summary` whose `over` value has the worst mean
    (lowest if higher is better), leaving out `exclude` (the honest reference)."""
    by = list(by)
    candidates = summary[~summary[over].isin(list(exclude))].dropna(subset=["mean"])
    if candidates.empty:
        return candidates.assign(**{f"worst_{over}": []})
    order = candidates.sort_values("mean", ascending=higher_is_better, kind="stable")
    worst = order.groupby(by, sort=False, dropna=False).head(1) if by else order.head(1)
    # Keep the grid's order of the groups.
    position = {k: i for i, k in enumerate(
        dict.fromkeys(map(tuple, summary[by].itertuples(index=False))))} if by else {}
    if by:
        worst = worst.assign(_pos=[position[tuple(r)] for r in worst[by].itertuples(index=False)])
        worst = worst.sort_values("_pos").drop(columns="_pos")
    return worst.rename(columns={over: f"worst_{over}"}).reset_index(drop=True)

