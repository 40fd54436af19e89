"""The regime map's figures and tables: accuracy vs PDMM's penalty c at a fixed Byzantine
fraction, accuracy vs the fraction at a fixed c (the baselines beside both), and accuracy vs
λ_P under every linear attack.

    python -m examples.pdmm_regimes_plots runs/pdmm_regimes [--attack=sign_flip]
        [--data=iid] [--fraction=0.3] [--c=0.4] [--output=runs/pdmm_regimes/report/plots]

Reads the grid's run files (`orchestration.report.results`; no TensorFlow), keeps the runs
of one data setting and one attack, and plots the mean over seeds with the min-max range:
PDMM's server model w_s and its honest clients' own models (mean) for θ = 1 and θ = ½;
FedAvg (model / delta attacked), the median and the local-only baseline as references. The
top axis of the c plot is λ_P, the weight decay the attack puts on PDMM's fixed point
(`pdmm.regimes`). The λ_P plot pools every attack that is linear in the message (sign flip,
`bit_flip:bits=sign`, scaling): if PDMM's fixed point is training with the weight decay λ_P,
they fall on one curve. Prints the tables as markdown.
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from orchestration.report.results import load_results  # noqa: E402
from pdmm.regimes import linear_factor, weight_decay  # noqa: E402
from tff_byz.registry import parse_spec  # noqa: E402

__all__ = ["method_frame", "summarize", "main"]

_PDMM_METRICS = {"final_accuracy": "w_s", "final_accuracy_node_mean": "own models"}


def method_frame(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run: `kind` (pdmm, fedavg model, fedavg delta, median, local), PDMM's c and
    θ (NaN for the others), `topology`, and the accuracies of `results`."""
    rows = []
    for _, run in results.iterrows():
        name, params = parse_spec(str(run["aggregator"]))[0]
        kind = name
        if name == "mean":
            kind = f"fedavg {run.get('attack_message', 'delta')}"
        rows.append(dict(
            kind=kind,
            c=float(params.get("c", "nan")) if name == "pdmm" else float("nan"),
            theta=float(params.get("theta", "nan")) if name == "pdmm" else float("nan"),
            topology=run.get("topology", "star"), data=run.get("data", run.get("partition")),
            attack=run["attack"], byzantine_fraction=float(run["byzantine_fraction"]),
            seed=int(run["seed"]), status=run["status"],
            lambda_p=float(run.get("lambda_p", float("nan"))),
            final_accuracy=run["final_accuracy"],
            final_accuracy_node_mean=run.get("final_accuracy_node_mean", float("nan"))))
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """Mean, min, max and number of seeds of `metric` per group of `by`."""
    grouped = frame.groupby(by, dropna=False)[metric]
    return pd.DataFrame({"mean": grouped.mean(), "min": grouped.min(), "max": grouped.max(),
                         "seeds": grouped.count()}).reset_index()


def _reference_lines(ax, frame, x_range):
    styles = {"fedavg model": ("tab:red", "--"), "fedavg delta": ("tab:orange", "--"),
              "median": ("tab:purple", ":"), "local": ("tab:gray", "-.")}
    for kind, (color, style) in styles.items():
        part = frame[frame["kind"] == kind]
        if not len(part):
            continue
        metric = "final_accuracy_node_mean" if kind == "local" else "final_accuracy"
        value = part[metric].mean()
        label = f"{kind} ({value:.3f})" if kind != "local" else f"local-only ({value:.3f})"
        ax.hlines(value, *x_range, colors=color, linestyles=style, label=label)


def _finish(fig, ax, path: str, *, xlabel: str, ylabel: str, title: str, pad: float = 6.0):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10, pad=pad)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_versus_c(frame: pd.DataFrame, fraction: float, kappa: float, path: str, title: str):
    pdmm = frame[(frame["kind"] == "pdmm") & (frame["topology"] == "star")
                 & (frame["byzantine_fraction"] == fraction)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cs = sorted(pdmm["c"].unique())
    for theta, color in ((1.0, "tab:blue"), (0.5, "tab:green")):
        part = pdmm[pdmm["theta"] == theta]
        for metric, style in (("final_accuracy", "-o"), ("final_accuracy_node_mean", "--s")):
            table = summarize(part, ["c"], metric).dropna(subset=["mean"]).sort_values("c")
            if not len(table):
                continue
            ax.plot(table["c"], table["mean"], style, color=color, markersize=4,
                    label=f"PDMM θ={theta:g}, {_PDMM_METRICS[metric]}")
            ax.fill_between(table["c"], table["min"], table["max"], color=color, alpha=0.12)
    others = frame[(frame["kind"] != "pdmm") & ((frame["byzantine_fraction"] == fraction)
                                                | (frame["kind"] == "local"))]
    if cs:
        _reference_lines(ax, others, (min(cs), max(cs)))
        ax.set_xscale("log")
        ax.set_xticks(cs)
        ax.set_xticklabels([f"{c:g}" for c in cs])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        top = ax.secondary_xaxis("top", functions=(
            lambda c: c * weight_decay(kappa, fraction, 1.0),
            lambda lam: lam / weight_decay(kappa, fraction, 1.0)))
        top.set_xlabel("λ_P = (1 − κ) β c / (1 − β + κβ)")
        top.set_xticks([c * weight_decay(kappa, fraction, 1.0) for c in cs])
        top.set_xticklabels([f"{c * weight_decay(kappa, fraction, 1.0):.2g}" for c in cs])
        top.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    _finish(fig, ax, path, xlabel="PDMM penalty c", ylabel="final test accuracy", title=title,
            pad=12)


def plot_versus_fraction(frame: pd.DataFrame, c: float, path: str, title: str):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = [("PDMM θ=1, w_s", (frame["kind"] == "pdmm") & (frame["theta"] == 1.0), "tab:blue",
              "-o"),
             ("PDMM θ=½, w_s", (frame["kind"] == "pdmm") & (frame["theta"] == 0.5), "tab:green",
              "-o"),
             ("FedAvg, model attacked", frame["kind"] == "fedavg model", "tab:red", "--^"),
             ("FedAvg, delta attacked", frame["kind"] == "fedavg delta", "tab:orange", "--v"),
             ("median", frame["kind"] == "median", "tab:purple", ":d")]
    star_c = (frame["topology"] == "star") & ((frame["kind"] != "pdmm") | (frame["c"] == c))
    for label, mask, color, style in lines:
        table = summarize(frame[mask & star_c], ["byzantine_fraction"], "final_accuracy")
        table = table.sort_values("byzantine_fraction")
        if not len(table):
            continue
        ax.plot(table["byzantine_fraction"], table["mean"], style, color=color, markersize=4,
                label=label)
        ax.fill_between(table["byzantine_fraction"], table["min"], table["max"], color=color,
                        alpha=0.12)
    _finish(fig, ax, path, xlabel="Byzantine fraction β", ylabel="final test accuracy",
            title=title)


def plot_versus_lambda(frame: pd.DataFrame, path: str, title: str):
    """The honest clients' own models against λ_P, one marker per linear attack: if the
    fixed-point account holds, every attack falls on one curve."""
    pdmm = frame[(frame["kind"] == "pdmm") & (frame["topology"] == "star")
                 & frame["lambda_p"].notna()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = iter("os^vDP*X")
    for (attack, theta), part in pdmm.groupby(["attack", "theta"]):
        table = summarize(part, ["lambda_p"], "final_accuracy_node_mean").dropna(
            subset=["mean"]).sort_values("lambda_p")
        if not len(table):
            continue
        ax.errorbar(table["lambda_p"], table["mean"],
                    yerr=[table["mean"] - table["min"], table["max"] - table["mean"]],
                    fmt=next(markers, "o"), capsize=2, markersize=5,
                    label=f"{attack}, θ={theta:g}")
    ax.set_xscale("log")
    _finish(fig, ax, path, xlabel="λ_P, the weight decay on PDMM's fixed point",
            ylabel="final test accuracy, honest clients' own models", title=title)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--attack", default="sign_flip")
    parser.add_argument("--data", default="iid")
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--c", type=float, default=0.4)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    results, _ = load_results(args.directory)
    results = results[results["status"].isin(["complete", "failed"])]
    frame = method_frame(results)
    attacked = frame[(frame["data"] == args.data) & (frame["attack"] == args.attack)]
    unattacked = frame[(frame["data"] == args.data) & (frame["attack"] == "none")]
    if not len(attacked):
        print(f"no finished runs with data={args.data!r} and attack={args.attack!r} in "
              f"{args.directory}", file=sys.stderr)
        return 2
    output = args.output or os.path.join(args.directory, "report", "plots")
    os.makedirs(output, exist_ok=True)
    name, params = parse_spec(args.attack)[0]
    kappa = linear_factor(name, params)
    if kappa is None:
        print(f"--attack={args.attack!r} is not linear in the message (pdmm.regimes): no λ_P",
              file=sys.stderr)
        return 2
    tag = f"{args.data}_{args.attack}".replace(" ", "_").replace(":", "_").replace("=", "")
    with_local = pd.concat([attacked, unattacked[unattacked["kind"] == "local"]])
    plot_versus_c(with_local, args.fraction, kappa, os.path.join(output, f"pdmm_vs_c_{tag}.png"),
                  f"MNIST {args.data}, {args.attack}, β = {args.fraction:g}: accuracy vs c "
                  "(mean over seeds, band min-max)")
    plot_versus_fraction(attacked, args.c, os.path.join(output, f"pdmm_vs_fraction_{tag}.png"),
                         f"MNIST {args.data}, {args.attack}, PDMM c = {args.c:g}: accuracy vs β")
    plot_versus_lambda(frame[frame["data"] == args.data],
                       os.path.join(output, f"pdmm_vs_lambda_{args.data.replace(' ', '_')}.png"),
                       f"MNIST {args.data}, PDMM (c swept) under every linear attack: "
                       "accuracy vs λ_P")
    for metric in ("final_accuracy", "final_accuracy_node_mean"):
        table = summarize(attacked, ["kind", "topology", "theta", "c", "byzantine_fraction"],
                          metric).dropna(subset=["mean"])
        print(f"\n{metric}, data={args.data}, attack={args.attack}\n")
        print(table.to_markdown(index=False, floatfmt=".3f"))
    print(f"\nwrote {output}/pdmm_vs_c_{tag}.png, pdmm_vs_fraction_{tag}.png and "
          f"pdmm_vs_lambda_{args.data.replace(' ', '_')}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
