"""Final accuracy of defences × attacks on one dataset, through the training pipeline.

    python -m examples.attack_table --output_dir=runs/attack_table [--rounds=30 --seeds=0,1]

Every cell is a normal run directory (`pipelines.train`'s layout); cells already
complete are read back instead of re-run, so the command resumes. Prints a
table of final test accuracy (mean over seeds, ± std when several), one row per
aggregator, one column per attack, and writes it to `<output_dir>/table.csv`.
`pipelines.compare` (grids, parallel workers, reports) generalises this.
"""

from __future__ import annotations

import json
import os
import sys

import pandas as pd
from absl import app, flags

# TFF (and with it Keras) must be imported before `app.run` parses flags: imported
# inside `main`, Keras later fails to build models with a Normalization layer.
from orchestration import training
from orchestration.config import ExperimentConfig
from tff_byz.context import managed_execution_context

flags.DEFINE_string("output_dir", "runs/attack_table", "Parent directory of the runs.")
flags.DEFINE_list("aggregators", ["mean", "median", "trimmed_mean"], "Aggregator specs.")
flags.DEFINE_list("attacks", ["none", "sign_flip", "label_flip", "gaussian", "lie", "ipm",
                              "min_max"], "Attack specs (none = the honest reference).")
flags.DEFINE_float("byzantine_fraction", 0.3, "Byzantine fraction of every attacked cell.")
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_integer("rounds", 30, "Rounds per run.")
flags.DEFINE_string("dataset", "digits", "Dataset.")
flags.DEFINE_string("data_dir", None, "Dataset directory.")
flags.DEFINE_integer("num_clients", 20, "Clients.")
FLAGS = flags.FLAGS


def run_cell(aggregator: str, attack: str, seed: int):
    config = ExperimentConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, num_clients=FLAGS.num_clients,
        aggregator=aggregator, attack=attack, rounds=FLAGS.rounds, seed=seed,
        # `none` keeps the same Byzantine clients honest: the defence is told the same f.
        byzantine_fraction=FLAGS.byzantine_fraction,
        eval_every=FLAGS.rounds, output_dir=FLAGS.output_dir).resolved()
    summary_path = os.path.join(config.output_dir, config.run_name, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary["status"] in ("complete", "failed"):
            return summary
    return training.run_experiment(config, overwrite=os.path.exists(summary_path), progress=False)


def main(argv):
    del argv
    rows = []
    with managed_execution_context():
        for aggregator in FLAGS.aggregators:
            for attack in FLAGS.attacks:
                for seed in map(int, FLAGS.seeds):
                    summary = run_cell(aggregator, attack, seed)
                    # A run stopped by a non-finite model scores chance level, 0 here.
                    accuracy = summary["final_test_accuracy"]
                    if summary["status"] == "failed":
                        accuracy = 0.0
                    rows.append(dict(aggregator=aggregator, attack=attack, seed=seed,
                                     accuracy=accuracy, status=summary["status"]))
                    print(f"{aggregator:>14} {attack:>12} seed {seed}: {accuracy:.4f} "
                          f"({summary['status']})", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(index="aggregator", columns="attack", values="accuracy",
                              aggfunc=["mean", "std"], sort=False)
    cells = table["mean"].map(lambda v: f"{v:.3f}")
    if len(FLAGS.seeds) > 1:
        cells = cells + table["std"].map(lambda v: f" ± {v:.3f}")
    cells = cells[[a for a in FLAGS.attacks]]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    frame.to_csv(os.path.join(FLAGS.output_dir, "table.csv"), index=False)
    print(f"final test accuracy, {FLAGS.dataset}, {FLAGS.num_clients} clients, "
          f"{FLAGS.byzantine_fraction:g} Byzantine declared (attack none: they behave honestly), {FLAGS.rounds} rounds, "
          f"seeds {','.join(FLAGS.seeds)}")
    print(cells.to_string())


if __name__ == "__main__":
    app.run(main)
