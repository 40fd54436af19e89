"""PDMM's cost (pdmm.md §7): round time ÷ FedAvg's, and the client-state memory per client.

Side by side in one run on the same data, model, clients, K local steps,
batch and learning rate: FedAvg with TFF's mean (`--local_steps=K`) and
centralized PDMM (`pdmm`), each built as `orchestration.experiment.Experiment` builds
it (full participation, no attack). Rounds are interleaved (one of each per
repetition, so load from other processes hits both alike); medians over
`--rounds` timed rounds after `--warmup` rounds (tracing excluded). A PDMM round
includes moving the participants' states out of and back into the
`ClientStateStore`, which `Algorithm.next` does. Goal: PDMM ≤ 1.2× FedAvg.

    python -m benchmarks.pdmm                                   # digits, 10 clients
    python -m benchmarks.pdmm --dataset=mnist --data_dir=../shared/data --model=wide_mlp
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from orchestration.config import ExperimentConfig  # noqa: E402
from orchestration.experiment import Experiment  # noqa: E402
from tff_byz import context, files  # noqa: E402

flags.DEFINE_string("dataset", "digits", "Dataset (see pipelines.train).")
flags.DEFINE_string("data_dir", None, "Directory of real datasets.")
flags.DEFINE_string("model", None, "Model (default: the dataset's).")
flags.DEFINE_integer("num_clients", 10, "Clients (all participate every round).")
flags.DEFINE_integer("local_steps", 10, "K local SGD steps, for both algorithms.")
flags.DEFINE_integer("batch_size", 64, "Client batch size.")
flags.DEFINE_integer("rounds", 10, "Timed rounds per algorithm.")
flags.DEFINE_integer("warmup", 2, "Untimed rounds first (tracing, worker start-up).")
flags.DEFINE_list("algorithms", ["mean", "pdmm", "pdmm:theta=0.5"],
                  "Aggregator specs; the first is the baseline.")
flags.DEFINE_string("output", None, "Also write the figures as JSON here.")
FLAGS = flags.FLAGS


def measure():
    total = FLAGS.warmup + FLAGS.rounds
    with context.ExecutionContext():
        runs = {}
        for spec in FLAGS.algorithms:
            experiment = Experiment(ExperimentConfig(
                dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, model=FLAGS.model,
                num_clients=FLAGS.num_clients, aggregator=spec, rounds=total,
                local_steps=FLAGS.local_steps, batch_size=FLAGS.batch_size,
                client_lr=0.05).resolved())
            clients = np.arange(experiment.num_clients)
            state = experiment.algorithm.initialize()
            for _ in range(FLAGS.warmup):
                state, _ = experiment.algorithm.next(state, clients)
            runs[spec] = [experiment, clients, state, []]
        for _ in range(FLAGS.rounds):
            for run in runs.values():
                experiment, clients, state, times = run
                start = time.perf_counter()
                run[2], _ = experiment.algorithm.next(state, clients)
                times.append(time.perf_counter() - start)
        first = runs[FLAGS.algorithms[0]][0]
        stores = {spec: getattr(run[0].algorithm, "client_states", None)
                  for spec, run in runs.items()}
        figures = dict(dataset=FLAGS.dataset, model=first.config.model,
                       parameters=first.num_parameters, clients=first.num_clients,
                       local_steps=FLAGS.local_steps, batch_size=FLAGS.batch_size,
                       timed_rounds=FLAGS.rounds,
                       round_seconds={spec: run[3] for spec, run in runs.items()},
                       client_state_bytes={spec: (store.bytes_per_client if store else 0)
                                           for spec, store in stores.items()})
    medians = {spec: float(np.median(t)) for spec, t in figures["round_seconds"].items()}
    base = medians[FLAGS.algorithms[0]]
    figures["median_round_seconds"] = medians
    figures["ratio_over_baseline"] = {spec: m / base for spec, m in medians.items()}
    print(f"pdmm round time: {FLAGS.dataset}, {figures['model']} ({figures['parameters']:,} "
          f"params), {figures['clients']} clients, K={FLAGS.local_steps} steps of "
          f"{FLAGS.batch_size}, median of {FLAGS.rounds} interleaved rounds (min-max)")
    for spec, t in figures["round_seconds"].items():
        print(f"  {spec:18s} {medians[spec]:8.3f} s  ({min(t):.3f}-{max(t):.3f})  "
              f"{figures['ratio_over_baseline'][spec]:5.2f}x   client state "
              f"{figures['client_state_bytes'][spec] / 1e6:8.3f} MB/client")
    print(f"  goal: pdmm <= 1.2x {FLAGS.algorithms[0]}; client state = 3 model copies "
          f"(w, v, u) + id + step counter", flush=True)
    return figures


def main(argv):
    del argv
    figures = measure()
    if FLAGS.output:
        files.write_json_atomic(FLAGS.output, figures)


if __name__ == "__main__":
    from absl import app
    app.run(main)
    sys.exit(0)
