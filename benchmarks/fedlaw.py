"""FedLAW's cost (fedlaw.md §8): round time ÷ FedAvg's, and the server step alone.

1. Round time, side by side in one run on the same data, model and clients:
   FedAvg with TFF's mean (`mean`), FedLAW learning rounds (`fedlaw`, two client
   passes) and FedLAW frozen rounds (`fedlaw:freeze=1`, the rounds after the
   first). Each is built as `orchestration.experiment.Experiment` builds it (full
   participation, no attack). Rounds are interleaved (one of each per
   repetition, so load from other processes hits all three alike); medians over
   `--rounds` timed rounds after `--warmup` rounds (tracing excluded), with the
   TFF worker's CPU time per round (less sensitive to other load than wall time)
   and its peak RSS during the round (sampled every 20 ms). Goals: learning ≈ 2×
   FedAvg, frozen ≤ 1.1× FedAvg.
2. The server step alone (`alignment_step` + `project_sparse_capped_simplex` +
   `weighted_delta` in one `tf.function`) on a random float32 [n, D] pass-A matrix
   and a float64 [D] Z (pass B arrives summed), each D in a fresh subprocess:
   median time and peak RSS above the RSS holding the inputs, beside the size of
   one [n, D] float32 matrix.

    python -m benchmarks.fedlaw                              # digits, 20 clients
    python -m benchmarks.fedlaw --dataset=mnist --data_dir=../shared/data --num_clients=200 \
        --model=mlp --local_epochs=3 --batch_size=64 --rounds=5 --parts=rounds
    python -m benchmarks.fedlaw --dataset=cifar10 --data_dir=../shared/data --num_clients=200 \
        --local_steps=1 --batch_size=16 --rounds=3 --parts=rounds   # 2.5e6 parameters
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import procstat  # noqa: E402
from tff_byz import files  # noqa: E402

ALGORITHMS = (("fedavg (mean)", "mean"), ("fedlaw learning", "fedlaw"),
              ("fedlaw frozen", "fedlaw:freeze=1"))
CHOICES = {"fedavg": "fedavg (mean)", "learning": "fedlaw learning", "frozen": "fedlaw frozen"}

flags.DEFINE_list("parts", ["rounds", "server"], "What to measure: rounds, server.")
flags.DEFINE_list("algorithms", list(CHOICES), "Round-time algorithms: fedavg, learning, frozen "
                  "(one alone gives its own worker peak RSS; ratios need fedavg).")
flags.DEFINE_string("dataset", "digits", "Dataset (see pipelines.train).")
flags.DEFINE_string("data_dir", None, "Directory of real datasets.")
flags.DEFINE_string("model", None, "Model (default: the dataset's).")
flags.DEFINE_integer("num_clients", 20, "Clients (all participate every round).")
flags.DEFINE_integer("local_epochs", 1, "Local epochs per client pass.")
flags.DEFINE_integer("local_steps", 0, "Local mini-batch steps per pass instead of epochs (0: epochs).")
flags.DEFINE_integer("batch_size", 32, "Client batch size.")
flags.DEFINE_integer("rounds", 5, "Timed rounds per algorithm.")
flags.DEFINE_integer("warmup", 1, "Untimed rounds first (tracing, worker start-up).")
flags.DEFINE_list("server_dims", ["109386", "2492170"], "D for the server step (MNIST MLP, CIFAR CNN).")
flags.DEFINE_integer("server_clients", 200, "n for the server step.")
flags.DEFINE_integer("server_repeats", 3, "Timed server steps per D (after one warm-up).")
flags.DEFINE_integer("server_child", 0, "Internal: measure the server step for this D and exit.")
flags.DEFINE_string("output", None, "Also write the figures as JSON here.")
FLAGS = flags.FLAGS


def round_times():
    # Imported here: TFF stays out of the server-step children (they measure memory).
    # pylint: disable=import-outside-toplevel
    from tff_byz import context
    from orchestration.config import ExperimentConfig
    from orchestration.experiment import Experiment
    total = 1 + FLAGS.warmup + FLAGS.rounds  # the schedule's T (frozen: one learning round first)
    with context.ExecutionContext() as tff_context:
        pid = tff_context.worker_pid
        runs = {}
        unknown = sorted(set(FLAGS.algorithms) - set(CHOICES))
        if unknown:
            raise SystemExit(f"--algorithms: unknown {', '.join(unknown)}; valid choices: "
                             f"{', '.join(CHOICES)}")
        chosen = [CHOICES[a] for a in FLAGS.algorithms]
        for name, spec in ALGORITHMS:
            if name not in chosen:
                continue
            experiment = Experiment(ExperimentConfig(
                dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, model=FLAGS.model,
                num_clients=FLAGS.num_clients, aggregator=spec, rounds=total,
                local_epochs=FLAGS.local_epochs, local_steps=FLAGS.local_steps,
                batch_size=FLAGS.batch_size).resolved())
            clients = np.arange(experiment.num_clients)
            state = experiment.algorithm.initialize()
            if spec.endswith("freeze=1"):  # round 0 learns; the timed rounds are frozen ones
                state, _ = experiment.algorithm.next(state, clients)
            for _ in range(FLAGS.warmup):
                state, _ = experiment.algorithm.next(state, clients)
            runs[name] = dict(experiment=experiment, clients=clients, state=state, seconds=[],
                              worker_cpu=[], worker_peak_mb=[])
        for _ in range(FLAGS.rounds):
            for run in runs.values():
                cpu_start, start = procstat.cpu_seconds(pid), time.perf_counter()
                with procstat.PeakRss(pid) as rss:
                    run["state"], _ = run["experiment"].algorithm.next(run["state"],
                                                                       run["clients"])
                run["seconds"].append(time.perf_counter() - start)
                cpu_end = procstat.cpu_seconds(pid)
                if cpu_start is not None and cpu_end is not None:
                    run["worker_cpu"].append(cpu_end - cpu_start)
                if rss.peak_mb is not None:
                    run["worker_peak_mb"].append(rss.peak_mb)
        experiment = next(iter(runs.values()))["experiment"]
        figures = dict(dataset=FLAGS.dataset, model=experiment.config.model,
                       parameters=experiment.num_parameters, clients=experiment.num_clients,
                       timed_rounds=FLAGS.rounds,
                       round_seconds={name: run["seconds"] for name, run in runs.items()},
                       worker_cpu_seconds={name: run["worker_cpu"] for name, run in runs.items()},
                       worker_peak_mb={name: run["worker_peak_mb"] for name, run in runs.items()})
    medians = {name: float(np.median(t)) for name, t in figures["round_seconds"].items()}
    cpu = {name: float(np.median(t)) if t else None
           for name, t in figures["worker_cpu_seconds"].items()}
    figures["median_round_seconds"] = medians
    figures["median_worker_cpu_seconds"] = cpu
    base = ALGORITHMS[0][0]
    for name, key in (("fedlaw learning", "learning"), ("fedlaw frozen", "frozen")):
        if base in medians and name in medians:
            figures[f"ratio_{key}_over_fedavg"] = medians[name] / medians[base]
            if cpu[base] and cpu[name]:
                figures[f"cpu_ratio_{key}_over_fedavg"] = cpu[name] / cpu[base]
    steps = (f"{FLAGS.local_steps} local step(s)" if FLAGS.local_steps
             else f"{FLAGS.local_epochs} local epoch(s)")
    print(f"fedlaw round time: {FLAGS.dataset}, {figures['model']} ({figures['parameters']:,} "
          f"params), {figures['clients']} clients, {steps}, batch {FLAGS.batch_size}, "
          f"median of {FLAGS.rounds} timed rounds (min-max); TFF worker CPU and peak RSS")
    for name, t in figures["round_seconds"].items():
        peak = figures["worker_peak_mb"][name]
        print(f"  {name:18s} {medians[name]:8.3f} s  ({min(t):.3f}-{max(t):.3f})"
              + (f"   worker CPU {cpu[name]:8.3f} s" if cpu[name] is not None else "")
              + (f"   worker peak {max(peak):7.0f} MB" if peak else ""))
    for key, label, goal in (("learning", "learning / FedAvg", "spec: ~2x"),
                             ("frozen", "frozen / FedAvg  ", "goal <= 1.1x")):
        if f"ratio_{key}_over_fedavg" in figures:
            cpu_ratio = figures.get(f"cpu_ratio_{key}_over_fedavg")
            print(f"  {label} {figures[f'ratio_{key}_over_fedavg']:8.2f}x"
                  + (f"   (worker CPU {cpu_ratio:.2f}x)" if cpu_ratio else "") + f"   ({goal})")
    sys.stdout.flush()
    return figures


def server_child(dim, n, repeats):
    """One process per D: inputs allocated by TF directly (no NumPy copy), then timed."""
    # Imported here: TFF stays out of the server-step children (they measure memory).
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from fedlaw import math as fedlaw_math
    f = n // 10
    s, cap = n - f, fedlaw_math.default_cap(n, n - f)

    @tf.function
    def step(delta_a, consensus, weights, losses):
        h = fedlaw_math.alignment_step(delta_a, consensus, weights, losses, alpha=0.01,
                                       beta=1e-3)
        w_new = fedlaw_math.project_sparse_capped_simplex(h, s, cap)
        return w_new, fedlaw_math.weighted_delta(delta_a, w_new)

    # What the process's server step gets: the stacked pass A (G, [n, D] float32) and the
    # streamed pass B's Z (float64 [D]). Default-range uniform: one op each, so no [n, D]
    # temporaries inflate the peak.
    inputs = (tf.random.uniform([n, dim], seed=1),
              tf.random.uniform([dim], dtype=tf.float64, seed=2),
              tf.fill([n], tf.constant(1.0 / n, tf.float64)), tf.random.uniform([n], 0.0, 2.0))
    rss_inputs = procstat.rss_mb(os.getpid())
    times = []
    for i in range(repeats + 1):  # the first call traces
        start = time.perf_counter()
        w_new, delta = step(*inputs)
        w_new.numpy(), delta.numpy()  # results materialised
        if i:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux
    print(json.dumps(dict(dim=dim, clients=n, seconds=float(np.median(times)),
                          matrix_mb=n * dim * 4 / 1e6, rss_inputs_mb=rss_inputs,
                          peak_above_inputs_mb=peak - rss_inputs)))


def server_step():
    n, repo = FLAGS.server_clients, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"fedlaw server step (alignment_step + projection + weighted_delta), n={n}, "
          f"median of {FLAGS.server_repeats}, each D in a fresh process", flush=True)
    rows = []
    for dim in map(int, FLAGS.server_dims):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.fedlaw", f"--server_child={dim}",
             f"--server_clients={n}", f"--server_repeats={FLAGS.server_repeats}"],
            cwd=repo, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(f"  D={dim:>9,}  {row['seconds']:7.3f} s   one [n, D] float32 matrix "
              f"{row['matrix_mb']:7.0f} MB   inputs RSS {row['rss_inputs_mb']:7.0f} MB   "
              f"peak above inputs {row['peak_above_inputs_mb']:6.0f} MB", flush=True)
    return rows


def main(argv):
    FLAGS(argv)
    if FLAGS.server_child:
        server_child(FLAGS.server_child, FLAGS.server_clients, FLAGS.server_repeats)
        return 0
    figures = {}
    if "rounds" in FLAGS.parts:
        figures["rounds"] = round_times()
    if "server" in FLAGS.parts:
        figures["server_step"] = server_step()
    if FLAGS.output:
        files.write_json_atomic(FLAGS.output, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
