"""FedLAW end to end in the paper's threat model on the embedded dataset.

Digits, 20 clients, label-group split q = 0.9 (10 groups of 2 clients), 30 % Byzantine
clients chosen as whole label groups (3 groups, 6 clients), attacks from round index 2,
α = 0.05, E = 3, B = 16, 20 rounds, β = 0.1, default sparsity schedule (s from 20 at
round 1 down to 14 at round 10) and cap (1/13). See README.md "FedLAW" and
BUILD_NOTES.md for why these settings and the two readings of "inverse gradient":

- `inverse_gradient` (the paper's text: negate the final update, honest loss) needs the
  paper's text loss f_i(θ̃) (`loss=start`); with the last-epoch loss the sign-flipped
  groups win the alignment term ⟨g_i, Σ_j w_j g̃_j⟩ (their deltas grow as the model
  forgets their labels) and are re-admitted;
- `inverse_gradient:mode=ascent` (the authors' code: local gradient ascent, the ascent
  path's losses reported) and `label_flip` work with the default last-epoch loss.

"Honest run" is the same training with the Byzantine groups absent (mean of the honest
clients): with whole label groups Byzantine, no defence can do better than learn from
the honest groups, whose data hold only 10 % of the Byzantine groups' labels. The run
with every client honest is also measured and reported (it is ~17 points higher).
"""

import numpy as np
import pandas as pd
import pytest

from orchestration import training
from orchestration.experiment import Experiment
from orchestration.config import ExperimentConfig

SETTINGS = dict(dataset="digits", partition="q", q=0.9, num_clients=20,
                byzantine_selection="label_groups", byzantine_fraction=0.3, local_epochs=3,
                batch_size=16, client_lr=0.05, rounds=20, seed=0, eval_every=20)
FEDLAW = "fedlaw:beta=0.1"
RUNS = {
    # name: (aggregator, attack)
    "fedlaw_inverse_gradient": (FEDLAW + ",loss=start", "inverse_gradient:start=2"),
    "fedlaw_inverse_gradient_ascent": (FEDLAW, "inverse_gradient:mode=ascent,start=2"),
    "fedlaw_label_flip": (FEDLAW, "label_flip:start=2"),
    "mean_inverse_gradient": ("mean", "inverse_gradient:start=2"),
    "mean_inverse_gradient_ascent": ("mean", "inverse_gradient:mode=ascent,start=2"),
    "mean_label_flip": ("mean", "label_flip:start=2"),
    "mean_no_attack": ("mean", "none"),
}
ATTACKS = ("inverse_gradient", "inverse_gradient_ascent", "label_flip")


def config(out, name, aggregator, attack):
    return ExperimentConfig(**dict(SETTINGS, aggregator=aggregator, attack=attack,
                                   output_dir=str(out), run_name=name))


def honest_clients_accuracy(out) -> float:
    """Mean aggregation over the honest clients only, every round (Byzantine groups absent)."""
    experiment = Experiment(config(out, "honest_clients", "mean", "none").resolved())
    honest = np.flatnonzero(~np.asarray(experiment.byzantine))
    assert len(honest) == 14
    state = experiment.algorithm.initialize()
    for _ in range(SETTINGS["rounds"]):
        state, _ = experiment.algorithm.next(state, honest)
    return experiment.evaluator(experiment.algorithm.model_weights(state))[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory, tff_context):
    out = tmp_path_factory.mktemp("fedlaw_label_groups")
    summaries = {name: training.run_experiment(config(out, name, *spec), progress=False)
                 for name, spec in RUNS.items()}
    accuracy = {name: (s["final_test_accuracy"] if s["status"] == "complete" else float("nan"))
                for name, s in summaries.items()}
    accuracy["honest_clients"] = honest_clients_accuracy(out)
    print("\nFedLAW label groups (digits, n=20, q=0.9, 30 % Byzantine groups, 20 rounds):",
          {k: round(v, 4) for k, v in accuracy.items()})
    return out, summaries, accuracy


def first_round_excluded(weights: pd.DataFrame, byzantine) -> float:
    """First round at which ≥ 90 % of the Byzantine weights are ≤ 1e-4 (inf if never)."""
    share = (weights[byzantine] <= 1e-4).mean(axis=1)
    reached = share.index[share >= 0.9]
    return reached.min() if len(reached) else float("inf")


@pytest.mark.parametrize("attack", ATTACKS)
def test_fedlaw_excludes_the_byzantine_groups_and_keeps_accuracy(results, attack):
    out, summaries, accuracy = results
    name = f"fedlaw_{attack}"
    summary = summaries[name]
    assert summary["status"] == "complete"
    byzantine = [f"{i:04d}" for i in summary["byzantine_ids"]]
    assert len(byzantine) == 6  # 3 whole label groups
    weights = pd.read_csv(out / name / "weights.csv").set_index("round")
    assert first_round_excluded(weights, byzantine) <= 20
    final = weights.iloc[-1]
    assert (final[byzantine] <= 1e-4).mean() >= 0.9
    assert (final.drop(byzantine) > 1e-4).all()  # no honest client excluded
    detection = summary["final_detection"]
    assert detection["recall"] >= 0.9 and detection["precision"] == 1.0
    assert accuracy[name] >= accuracy["honest_clients"] - 0.03


@pytest.mark.parametrize("attack", ATTACKS)
def test_mean_collapses_where_fedlaw_does_not(results, attack):
    _, _, accuracy = results
    mean = accuracy[f"mean_{attack}"]
    if attack == "inverse_gradient_ascent":
        # The ascent deltas grow without bound: the mean model diverges (non-finite or chance).
        assert np.isnan(mean) or mean <= 0.2
    else:
        assert mean <= accuracy[f"fedlaw_{attack}"] - 0.05
        assert mean <= accuracy["mean_no_attack"] - 0.2
