"""Figures of a grid (matplotlib, Agg backend), each saved as PNG and SVG.

- `accuracy_curves`: test accuracy vs round, one line per aggregator (mean over seeds,
  shaded Student-t confidence band), one panel per attack (columns) and Byzantine
  fraction (rows), one figure per setting of the other varying columns;
- `heatmaps`: mean final accuracy over Byzantine fraction (rows) × heterogeneity
  (columns), one panel per aggregator, one figure per attack (only when either
  axis varies);
- `fedlaw_figures`: FedLAW's learned client weights over rounds (one seed; Byzantine
  clients red, honest blue) beside detection precision and recall (mean ± band);
- `backdoor_curves`: backdoor attack success rate vs round per aggregator.

Every function returns the paths it wrote (without extension: `.png` and `.svg`).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from tff_byz import files  # noqa: E402
from orchestration.report import stats  # noqa: E402

__all__ = ["accuracy_curves", "heatmaps", "fedlaw_figures", "backdoor_curves", "mean_band"]

ASR = "backdoor/attack_success_rate"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-") or "all"


def _save(fig, path: str) -> str:
    """Writes path.png and path.svg atomically; returns path."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    for extension in ("png", "svg"):
        with files.replaced_atomically(f"{path}.{extension}") as tmp:
            fig.savefig(tmp, format=extension, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def mean_band(frame: pd.DataFrame, x: str, y: str, confidence: float = 0.95) -> pd.DataFrame:
    """Per value of x: mean of y and its Student-t confidence band (lo = hi = mean for n < 2)."""
    rows = []
    for value, group in frame.dropna(subset=[y]).groupby(x, sort=True):
        samples = group[y].to_numpy(dtype=float)
        n, mean = len(samples), float(np.mean(samples))
        half = 0.0
        if n > 1:
            half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)
                         * np.std(samples, ddof=1) / math.sqrt(n))
        rows.append({x: value, "mean": mean, "low": mean - half, "high": mean + half, "n": n})
    return pd.DataFrame(rows, columns=[x, "mean", "low", "high", "n"])


def _colors(values: Sequence) -> dict:
    cmap = plt.get_cmap("tab10")
    return {value: cmap(i % 10) for i, value in enumerate(values)}


def _unique(frame: pd.DataFrame, column: str) -> list:
    return list(dict.fromkeys(frame[column])) if column in frame else [None]


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _panels(frame, rows: str, cols: str):
    row_values = _unique(frame, rows) if rows else [None]
    col_values = _unique(frame, cols) if cols else [None]
    fig, axes = plt.subplots(len(row_values), len(col_values), squeeze=False, sharex=True,
                             sharey=True, figsize=(3.2 * len(col_values) + 0.8,
                                                   2.6 * len(row_values) + 0.6))
    for i, row_value in enumerate(row_values):
        for j, col_value in enumerate(col_values):
            mask = np.ones(len(frame), dtype=bool)
            if rows:
                mask &= (frame[rows] == row_value).to_numpy()
            if cols:
                mask &= (frame[cols] == col_value).to_numpy()
            title = ", ".join(f"{n}={_fmt(v)}" if n != "attack" else str(v)
                              for n, v in ((cols, col_value), (rows, row_value)) if n)
            yield fig, axes, axes[i][j], frame[mask], title


def _curves(frame: pd.DataFrame, y: str, ylabel: str, out_path: str, suptitle: str, *,
            hue: str, rows: str, cols: str, confidence: float) -> str:
    colors = _colors(_unique(frame, hue))
    fig = axes = None
    for fig, axes, ax, panel, title in _panels(frame, rows, cols):
        for value, color in colors.items():
            band = mean_band(panel[panel[hue] == value], "round", y, confidence)
            if band.empty:
                continue
            ax.plot(band["round"], band["mean"], color=color, label=str(value), lw=1.6)
            # Rates live in [0, 1]; with few seeds the t band reaches far beyond (t = 12.7 at
            # n = 2), so it is drawn clipped to the possible range.
            ax.fill_between(band["round"], band["low"].clip(0, 1), band["high"].clip(0, 1),
                            color=color, alpha=0.18, lw=0)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("round")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:  # a panel may miss some hue values
        h, l = ax.get_legend_handles_labels()
        if len(l) > len(labels):
            handles, labels = h, l
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), title=hue,
               frameon=False)
    fig.suptitle(f"{suptitle}; bands clipped to [0, 1]", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


def accuracy_curves(rounds: pd.DataFrame, out_dir: str, *, hue: str = "aggregator",
                    cols: str = "attack", rows: str = "", facets: Sequence[str] = (),
                    confidence: float = 0.95) -> list[str]:
    """Test accuracy vs round with confidence bands (see the module doc)."""
    written = []
    frame = rounds.dropna(subset=["test_accuracy"])
    for label, group in stats.facet_groups(frame, facets):
        name = "accuracy_vs_round" + (f"_{_slug(label)}" if label else "")
        written.append(_curves(
            group, "test_accuracy", "test accuracy", os.path.join(out_dir, name),
            f"test accuracy, mean and {confidence:.0%} CI over seeds" + (f" ({label})" if label else ""),
            hue=hue, rows=rows, cols=cols, confidence=confidence))
    return written


def backdoor_curves(rounds: pd.DataFrame, out_dir: str, *, hue: str = "aggregator",
                    cols: str = "", rows: str = "", facets: Sequence[str] = (),
                    confidence: float = 0.95) -> list[str]:
    """Backdoor attack success rate vs round, for runs that report it."""
    if ASR not in rounds:
        return []
    frame = rounds.dropna(subset=[ASR])
    written = []
    for label, group in stats.facet_groups(frame, facets):
        name = "backdoor_asr" + (f"_{_slug(label)}" if label else "")
        written.append(_curves(
            group, ASR, "attack success rate", os.path.join(out_dir, name),
            f"backdoor attack success rate, mean and {confidence:.0%} CI over seeds"
            + (f" ({label})" if label else ""), hue=hue, rows=rows, cols=cols,
            confidence=confidence))
    return written


def heatmaps(results: pd.DataFrame, out_dir: str, *, value: str = "final_accuracy",
             x: str = "heterogeneity", y: str = "byzantine_fraction", panel: str = "aggregator",
             facets: Sequence[str] = ("attack",)) -> list[str]:
    """Mean `value` over y × x per panel value; only when x or y takes several values."""
    if results[x].nunique() < 2 and results[y].nunique() < 2:
        return []
    written = []
    x_values, y_values = _unique(results, x), sorted(_unique(results, y))
    finite = results[value].dropna()
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    for label, group in stats.facet_groups(results, facets):
        panels = _unique(group, panel)
        fig, axes = plt.subplots(1, len(panels), squeeze=False, sharey=True,
                                 constrained_layout=True,
                                 figsize=(max(2.4, 1.1 * len(x_values)) * len(panels) + 1.4,
                                          0.55 * len(y_values) + 2.0))
        image = None
        for ax, panel_value in zip(axes[0], panels):
            means = (group[group[panel] == panel_value].groupby([y, x])[value].mean()
                     .unstack(x).reindex(index=y_values, columns=x_values))
            image = ax.imshow(means.to_numpy(dtype=float), cmap="viridis", vmin=vmin, vmax=vmax,
                              aspect="auto", origin="lower")
            for (i, j), cell in np.ndenumerate(means.to_numpy(dtype=float)):
                if not math.isnan(cell):
                    ax.text(j, i, f"{cell:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if cell < (vmin + vmax) / 2 else "black")
            ax.set_xticks(range(len(x_values)), [_fmt(v) for v in x_values], rotation=30,
                          fontsize=8)
            ax.set_yticks(range(len(y_values)), [_fmt(v) for v in y_values], fontsize=8)
            ax.tick_params(labelleft=ax is axes[0][0])
            ax.set_xlabel(x)
            ax.set_title(str(panel_value), fontsize=9)
        axes[0][0].set_ylabel(y)
        fig.colorbar(image, ax=axes[0].tolist(), label=f"mean {value}", shrink=0.9)
        fig.suptitle(f"mean {value} over seeds" + (f" ({label})" if label else ""), fontsize=10)
        name = "heatmap" + (f"_{_slug(label)}" if label else "")
        written.append(_save(fig, os.path.join(out_dir, name)))
    return written


def fedlaw_figures(results: pd.DataFrame, rounds: pd.DataFrame, out_dir: str, *,
                   facets: Sequence[str] = ("attack",), confidence: float = 0.95) -> list[str]:
    """Per FedLAW setting: learned weights of the first seed's run, and detection curves."""
    spec = results.get("aggregator_resolved", results["aggregator"]).astype(str)
    fedlaw = results[spec.str.startswith("fedlaw")]
    written = []
    for label, group in stats.facet_groups(fedlaw, [f for f in facets if f in fedlaw]):
        first = group.sort_values("seed").iloc[0]
        weights_path = os.path.join(first["run_dir"], "weights.csv")
        if not os.path.exists(weights_path):
            continue
        weights = pd.read_csv(weights_path).sort_values("round")
        byzantine = set(json.loads(first.get("byzantine_ids", "[]") or "[]"))
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
        client_columns = [c for c in weights.columns if c != "round"]
        for position, column in enumerate(client_columns):
            # Client ids are zero-padded client indices ("0007"): the summary's byzantine_ids.
            bad = (int(column) if str(column).isdigit() else position) in byzantine
            left.plot(weights["round"], weights[column], color="tab:red" if bad else "tab:blue",
                      alpha=0.8 if bad else 0.5, lw=1.2 if bad else 0.8, zorder=3 if bad else 2)
        left.plot([], [], color="tab:red", label="Byzantine")
        left.plot([], [], color="tab:blue", label="honest")
        left.set_xlabel("round")
        left.set_ylabel("weight w_i")
        left.set_title(f"learned weights, seed {first['seed']}", fontsize=9)
        left.legend(frameon=False, fontsize=8)
        left.grid(alpha=0.3)
        runs = rounds[rounds["run_name"].isin(group["run_name"])]
        for metric, color in (("detection/precision", "tab:green"), ("detection/recall", "tab:purple")):
            if metric not in runs:
                continue
            band = mean_band(runs, "round", metric, confidence)
            right.plot(band["round"], band["mean"], color=color, label=metric.split("/")[1])
            right.fill_between(band["round"], band["low"].clip(0, 1), band["high"].clip(0, 1),
                               color=color, alpha=0.18, lw=0)
        right.set_ylim(-0.05, 1.05)
        right.set_xlabel("round")
        right.set_title(f"detection (w_i ≤ 1e-4), mean and {confidence:.0%} CI over "
                        f"{len(group)} seed(s)", fontsize=9)
        right.legend(frameon=False, fontsize=8)
        right.grid(alpha=0.3)
        fig.suptitle(f"FedLAW ({label})" if label else "FedLAW", fontsize=10)
        fig.tight_layout()
        name = "fedlaw" + (f"_{_slug(label)}" if label else "")
        written.append(_save(fig, os.path.join(out_dir, name)))
    return written
