"""Hand-made run directories (the files pipelines.train writes), for report tests."""

import json
import math
import os

import pandas as pd

CONFIG = dict(dataset="digits", data_dir=None, partition="iid", q=0.5, q_mode="sample", alpha=0.5,
              num_clients=4, clients_per_round=0, model="small_mlp", aggregator="mean",
              attack="none", byzantine_fraction=0.25, byzantine_selection="random",
              declared_byzantine_fraction=None, rounds=3, local_epochs=1, batch_size=32,
              client_lr=0.1, client_work="local_sgd", momentum=0.9, weight_decay=0.0,
              server_lr=1.0, eval_every=1, checkpoint_every=1, seed=0, output_dir="x",
              run_name=None, tff_workers="")


def write_run(root, run_name, accuracies, *, status="complete", reason="", detection=None,
              asr=None, weights=None, byzantine_ids=(1,), honest_mean=None, losses=None,
              **config):
    """A run directory with config.json, summary.json, metrics.csv (one row per accuracy)."""
    directory = os.path.join(root, "runs", run_name)
    os.makedirs(directory, exist_ok=True)
    values = dict(CONFIG, run_name=run_name, rounds=len(accuracies), **config)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(values, f)
    evaluated = [a for a in accuracies if not math.isnan(a)]
    summary = dict(run_name=run_name, status=status, reason=reason,
                   rounds_completed=len(accuracies), rounds_planned=values["rounds"],
                   final_test_accuracy=evaluated[-1] if evaluated else None,
                   final_test_loss=1.0, best_test_accuracy=max(evaluated) if evaluated else None,
                   wall_seconds=2.0, num_parameters=10, num_clients=4,
                   byzantine_ids=list(byzantine_ids), actual_byzantine_fraction=0.25,
                   declared_byzantine_fraction=0.25, attack_groups={})
    metrics = pd.DataFrame(dict(round=range(1, len(accuracies) + 1), test_accuracy=accuracies,
                                test_loss=1.0 if losses is None else losses,
                                round_seconds=0.1))
    if detection is not None:
        summary["final_detection"] = dict(precision=detection[-1][0], recall=detection[-1][1],
                                          f1=0.5, accuracy=0.5)
        metrics["detection/precision"] = [p for p, _ in detection]
        metrics["detection/recall"] = [r for _, r in detection]
    if honest_mean is not None:  # PDMM: the honest clients' mean model
        summary["final_test_accuracy_honest_mean"] = honest_mean
    if asr is not None:
        metrics["backdoor/attack_success_rate"] = asr
    if weights is not None:
        frame = pd.DataFrame(weights, columns=[f"{i:04d}" for i in range(len(weights[0]))])
        frame.insert(0, "round", range(1, len(weights) + 1))
        frame.to_csv(os.path.join(directory, "weights.csv"), index=False)
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump(summary, f)
    metrics.to_csv(os.path.join(directory, "metrics.csv"), index=False)
    return directory


def write_manifest(root, cells):
    """grid.json for (run_name, axes) pairs."""
    with open(os.path.join(root, "grid.json"), "w") as f:
        json.dump(dict(name="test", cells=[dict(id=name, run_name=name, axes=axes, rounds=3,
                                                 outcome="complete", reason="")
                                            for name, axes in cells]), f)
