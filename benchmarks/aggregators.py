"""Round time of each aggregation rule ÷ TFF `MeanFactory`'s, side by side in one run.

Same FedAvg process (honest local SGD, one epoch of `--examples_per_client`
random 28×28 examples per client), same data, same clients; only the
aggregator differs. `stacked_mean` (stacking + a plain mean) isolates the cost of
bringing every client's value to the server (the stacking step alone).

    python -m benchmarks.aggregators                     # mlp and emnist_cnn, n = 10, 50, 200
    python -m benchmarks.aggregators --models=emnist_cnn --clients=50 --rules=median,trimmed_mean
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import collections  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from aggregators import AGGREGATORS  # noqa: E402
from aggregators.build import AggregatorContext, build_aggregator  # noqa: E402
from aggregators.mean import StackedMeanFactory  # noqa: E402
from benchmarks.procstat import cpu_seconds  # noqa: E402
from tff_byz import files  # noqa: E402
from tff_byz import client_inputs, context, fedavg, models  # noqa: E402

flags.DEFINE_list("models", ["mlp", "emnist_cnn"], "Models (~1e5 and ~1.2e6 parameters).")
flags.DEFINE_list("clients", ["10", "50", "200"], "Client counts.")
flags.DEFINE_list("rules", None, "Aggregator specs (default: every registered rule).")
flags.DEFINE_integer("rounds", 5, "Timed rounds per process (after one warm-up), interleaved.")
flags.DEFINE_integer("examples_per_client", 32, "Training examples per client.")
flags.DEFINE_float("byzantine_fraction", 0.1, "Declared fraction given to the rules.")
flags.DEFINE_string("output", None, "Also write the table as JSON here.")
FLAGS = flags.FLAGS

SHAPE, CLASSES, NORM = (28, 28, 1), 10, ((0.5,), (0.25,))


def default_rules():
    rules = [name for name in AGGREGATORS.names
             if AGGREGATORS.entry(name).kind == "rule" and name != "mean"]
    if "bucketing" in AGGREGATORS:
        rules.append("bucketing:s=2+median")
    return rules


def client_data(n, per_client, seed=0):
    rng = np.random.default_rng(seed)
    datasets = []
    for i in range(n):
        x = rng.random((per_client, *SHAPE), dtype=np.float32)
        y = rng.integers(0, CLASSES, per_client).astype(np.int32)
        datasets.append(client_inputs.make_client_input(
            tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)), i))
    return datasets


class RoundTimer:
    """Rounds of one process, timed one at a time (so processes can be interleaved)."""

    def __init__(self, process, inputs, worker_pid=None):
        self.process, self.inputs, self.worker_pid = process, inputs, worker_pid
        self.state = process.initialize()
        self.wall, self.cpu = [], []

    def round(self, record: bool = True):
        cpu_start, start = cpu_seconds(self.worker_pid), time.perf_counter()
        self.state = self.process.next(self.state, self.inputs).state
        wall, cpu_end = time.perf_counter() - start, cpu_seconds(self.worker_pid)
        if record:
            self.wall.append(wall)
            if cpu_start is not None and cpu_end is not None:
                self.cpu.append(cpu_end - cpu_start)

    def median(self):
        return (float(np.median(self.wall)),
                float(np.median(self.cpu)) if self.cpu else None)


def time_interleaved(processes, inputs, rounds, worker_pid=None):
    """{name: (median wall s, median worker CPU s)} per round, after one warm-up round each.

    Rounds are interleaved (mean, rule 1, rule 2, ..., mean, rule 1, ...), so slow drift
    of the machine (other load, the allocator's state) hits every process alike; the
    worker's CPU time (all its threads) is much less sensitive than wall time to other
    load on the machine, so it is reported beside the wall-time ratio."""
    timers, failed = collections.OrderedDict(), collections.OrderedDict()
    for name, process in processes.items():
        try:
            timer = RoundTimer(process, inputs, worker_pid)
            timer.round(record=False)  # warm-up
            timers[name] = timer
        except Exception as error:  # e.g. a requirement violated at this n
            failed[name] = str(error).splitlines()[0][:100]
    for _ in range(rounds):
        for timer in timers.values():
            timer.round()
    return collections.OrderedDict((name, t.median()) for name, t in timers.items()), failed


def main(argv):
    FLAGS(argv)
    rules = FLAGS.rules or default_rules()
    rows = []
    with context.ExecutionContext() as execution_context:
        worker_pid = execution_context.worker_pid
        for model in FLAGS.models:
            keras_model = models.build_keras_model(model, SHAPE, CLASSES, NORM, seed=0)
            params = models.count_parameters(keras_model)
            initial = fedavg.model_weights_from_keras(keras_model)
            model_fn = models.make_model_fn(model, SHAPE, CLASSES, NORM)

            def build(aggregator):
                return fedavg.build_fedavg_process(model_fn, initial, aggregator=aggregator,
                                                   local_epochs=1, batch_size=32, client_lr=0.05)

            for n in map(int, FLAGS.clients):
                # As the pipeline builds them: told the declared fraction and the clients per
                # round (which bounds the sorting networks a rule builds).
                agg_context = AggregatorContext(
                    declared_byzantine_fraction=FLAGS.byzantine_fraction, clients_per_round=n)
                processes = collections.OrderedDict(
                    mean=build(build_aggregator("mean", agg_context)))
                processes["stacked_mean (stacking step)"] = build(
                    StackedMeanFactory(weighted=True, expected_clients=n))
                build_failed = collections.OrderedDict()
                for rule in rules:
                    try:
                        processes[rule] = build(build_aggregator(rule, agg_context))
                    except ValueError as error:  # e.g. a requirement violated at this n
                        build_failed[rule] = str(error).splitlines()[0][:100]
                inputs = client_data(n, FLAGS.examples_per_client)
                timings, failed = time_interleaved(processes, inputs, FLAGS.rounds, worker_pid)
                failed.update(build_failed)
                baseline, baseline_cpu = timings["mean"]
                print(f"\n{model} ({params:,} params), n={n}: mean round {baseline:.3f} s"
                      + (f" (worker CPU {baseline_cpu:.3f} s)" if baseline_cpu else "")
                      + f"; median of {FLAGS.rounds} interleaved rounds", flush=True)
                for name in list(processes) + list(build_failed):
                    if name == "mean":
                        continue
                    if name in failed:
                        print(f"  {name:32s} skipped: {failed[name]}")
                        continue
                    seconds, cpu = timings[name]
                    ratio = seconds / baseline
                    cpu_ratio = cpu / baseline_cpu if cpu and baseline_cpu else None
                    rows.append(dict(model=model, parameters=params, clients=n, rule=name,
                                     round_seconds=seconds, mean_round_seconds=baseline,
                                     ratio=ratio, worker_cpu_seconds=cpu,
                                     mean_worker_cpu_seconds=baseline_cpu, cpu_ratio=cpu_ratio))
                    print(f"  {name:32s} {seconds:8.3f} s   {ratio:6.2f}x mean"
                          + (f"   (worker CPU {cpu:7.3f} s, {cpu_ratio:5.2f}x)" if cpu_ratio else ""),
                          flush=True)
    if FLAGS.output:
        files.write_json_atomic(FLAGS.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
