"""Client data by reference against by value, side by side (each run in a fresh process).

Workloads (`--parts`):
- `momentum`: momentum SGD, MNIST LeNet, 14 clients, batch 25 (one mini-batch
  step per client and round). Also the same 14 gradient steps in plain TF in
  the reference process (its round ÷ plain TF).
- `fedavg`: FedAvg, MNIST MLP, 200 clients, one local epoch of batch 32. Also
  the direct-TF client update of `benchmarks.throughput` (no TFF).
- `fixed`: the per-client fixed cost: FedAvg, MNIST MLP, 200 clients, one step
  of one example per client; round ÷ clients.
- `store`: the one-off cost of writing the client-data store (MNIST, CIFAR-10)
  into an empty cache, and of opening it again (what every later run pays).
- `long`: one algorithm for `--long_rounds` rounds through the pipeline's own
  loop (`run_experiment`: evaluation, checkpoints, a dead worker replaced;
  default the FedLAW MNIST protocol at 200 clients), the worker's RSS after
  every round.
- `cifar`: one FedLAW learning round of the CIFAR CNN at 200 clients by
  reference: time and worker peak RSS, and the 400-round protocol's time.

Modes, each measured in its own fresh process so memory is its own:
- `value`: the library's by-value path, as the pipelines ran before clients
  went by reference: `make_client_input` datasets into every call, models with
  random initializers, client states through Python every round.
- `reference`: the pipelines' path (`orchestration.experiment.Experiment`): client ids,
  rows read from the store in the worker, client states kept on the worker
  while the same clients return.

For `momentum`, `fedavg` and `fixed` the two modes alternate `--repeats` times
(value, reference, value, ...); the figures are medians over the timed rounds
of each run, and the ratios are reference ÷ value run by run. Memory is the
peak resident set of the TFF worker and of the whole process tree (Python +
worker), sampled every 20 ms.

    python -m benchmarks.client_data --data_dir=../shared/data
    python -m benchmarks.client_data --data_dir=../shared/data --parts=long --long_rounds=200
    python -m benchmarks.client_data --data_dir=../shared/data --parts=cifar
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import collections  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import procstat  # noqa: E402
from tff_byz import files  # noqa: E402

PARTS = ("momentum", "fedavg", "fixed", "store", "long", "cifar")
WORKLOADS = {
    "momentum": dict(dataset="mnist", model="lenet", num_clients=14, batch_size=25,
                     client_work="momentum_sgd", server_lr=0.1),
    "fedavg": dict(dataset="mnist", model="mlp", num_clients=200, batch_size=32,
                   local_epochs=1, client_lr=0.05),
    "fixed": dict(dataset="mnist", model="mlp", num_clients=200, batch_size=1, local_steps=1,
                  client_lr=0.05),
    "long": dict(dataset="mnist", model="mlp", num_clients=200, partition="q", q=0.9,
                 batch_size=64, local_epochs=3, client_lr=0.01, aggregator="fedlaw:beta=6e-4"),
    "cifar": dict(dataset="cifar10", model="cifar_cnn", num_clients=200, batch_size=16,
                  local_steps=1, client_lr=0.01, aggregator="fedlaw"),
}

flags.DEFINE_list("parts", ["momentum", "fedavg", "fixed", "store"],
                  f"What to measure: {', '.join(PARTS)}.")
flags.DEFINE_string("data_dir", None, "Directory of real datasets (MNIST, CIFAR-10).")
flags.DEFINE_integer("rounds", 20, "Timed rounds per run (after --warmup).")
flags.DEFINE_integer("warmup", 3, "Untimed rounds first (tracing, worker start-up).")
flags.DEFINE_integer("repeats", 2, "Runs per mode (alternating value, reference).")
flags.DEFINE_integer("long_rounds", 200, "Rounds of the `long` part.")
flags.DEFINE_string("long_aggregator", WORKLOADS["long"]["aggregator"], "Its algorithm.")
flags.DEFINE_list("store_datasets", ["mnist", "cifar10"], "Datasets of the `store` part.")
flags.DEFINE_string("child", None, "Internal: run one measurement (JSON) and print its result.")
flags.DEFINE_string("output", None, "Also write every figure as JSON here.")
FLAGS = flags.FLAGS


class TreePeak:
    """Peak RSS of the worker and of Python + worker, sampled every 20 ms.

    `worker_pid`: the pid, or a callable giving the current one (a run may replace a worker
    that died)."""

    def __init__(self, worker_pid):
        self._worker = worker_pid if callable(worker_pid) else (lambda: worker_pid)
        self.worker_mb = self.total_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        python, worker = (procstat.rss_mb(pid) or 0.0 for pid in (os.getpid(), self._worker()))
        self.worker_mb = max(self.worker_mb, worker)
        self.total_mb = max(self.total_mb, python + worker)

    def _run(self):
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        self._sample()


def _config(workload: str, **overrides):
    # Imported here: the parent, which spawns the measured children, imports no TF.
    # pylint: disable=import-outside-toplevel
    from orchestration.config import ExperimentConfig
    values = dict(WORKLOADS[workload], data_dir=FLAGS.data_dir, seed=0, rounds=10**6,
                  output_dir=tempfile.mkdtemp(prefix="client_data-"), run_name="bench")
    values.update(overrides)
    return ExperimentConfig(**values).resolved()


def _by_value_round(config):
    """The by-value path, as the pipelines ran it before ids: returns (round fn, state)."""
    # Imported here: the parent, which spawns the measured children, imports no TF.
    # pylint: disable=import-outside-toplevel
    from tff_byz import client_inputs, client_state, client_work, datasets, fedavg, models, momentum
    data = datasets.load_federated_dataset(config.dataset, data_dir=config.data_dir,
                                           partition=config.partition, num_clients=config.num_clients,
                                           seed=config.seed, q=config.q)
    keras_model = models.build_keras_model(config.model, data.input_shape, data.num_classes,
                                           data.normalization, seed=config.seed)
    initial = fedavg.model_weights_from_keras(keras_model)
    model_fn = models.make_model_fn(config.model, data.input_shape, data.num_classes,
                                    data.normalization)
    values = [client_inputs.make_client_input(data.client_data.create_tf_dataset_for_client(cid), i)
              for i, cid in enumerate(data.client_ids)]
    ids = np.arange(len(values))
    if config.client_work == "momentum_sgd":
        process = momentum.build_momentum_sgd_process(
            model_fn, initial, batch_size=config.batch_size, momentum=config.momentum,
            server_lr=config.server_lr, seed=config.seed)
        store = client_state.ClientStateStore(process.client_state_template, len(values),
                                              id_key="client_id")

        def run(state):
            output = process.next(state, values, store.get(ids))
            store.put(ids, output["client_states"])
            return output["state"]
    else:
        process = fedavg.build_fedavg_process(
            model_fn, initial, client_work=client_work.build_local_sgd_client_work(
                model_fn, epochs=config.local_epochs, batch_size=config.batch_size,
                learning_rate=config.client_lr, seed=config.seed, steps=config.local_steps))

        def run(state):
            return process.next(state, values).state
    return run, process.initialize(), sum(len(data.client_arrays(i)[1]) for i in ids)


def _by_reference_round(config):
    # Imported here: the parent, which spawns the measured children, imports no TF.
    # pylint: disable=import-outside-toplevel
    from orchestration import experiment as experiment_lib
    experiment = experiment_lib.Experiment(config)
    experiment.verify_store()
    clients = np.arange(experiment.num_clients)

    def run(state):
        return experiment.algorithm.next(state, clients)[0]
    return run, experiment.algorithm.initialize(), experiment, clients


def _timed(run, state, worker_pid, rounds, warmup):
    for _ in range(warmup):
        state = run(state)
    seconds, cpu = [], []
    with TreePeak(worker_pid) as peak:
        for _ in range(rounds):
            w0, t0 = procstat.cpu_seconds(worker_pid), time.perf_counter()
            state = run(state)
            seconds.append(time.perf_counter() - t0)
            cpu.append(procstat.cpu_seconds(worker_pid) - w0)
    return state, dict(round_seconds=statistics.median(seconds),
                       worker_cpu_seconds=statistics.median(cpu),
                       worker_peak_mb=peak.worker_mb, total_peak_mb=peak.total_mb)


def _plain_tf_momentum(experiment, clients, repeats=20):
    """The round's mini-batch gradient steps (same batches) in plain TF, one tf.function each."""
    # Imported here: the parent, which spawns the measured children, imports no TF.
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from tff_byz import models
    config, data = experiment.config, experiment.dataset
    model = models.build_keras_model(config.model, data.input_shape, data.num_classes,
                                     data.normalization, seed=0)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    arrays = [tuple(tf.constant(a) for a in data.client_arrays(int(i))) for i in clients]
    momenta = [[tf.Variable(tf.zeros_like(v)) for v in model.trainable_variables] for _ in clients]

    @tf.function
    def step(x, y, momentum, seed):
        index = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(y)[0]), seed)[:25]
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.gather(y, index), model(tf.gather(x, index), training=True))
        for m, g in zip(momentum, tape.gradient(loss, model.trainable_variables)):
            m.assign(0.9 * m + 0.1 * g)

    def round_():
        for k, (x, y) in enumerate(arrays):
            step(x, y, momenta[k], tf.constant([0, k], tf.int64))

    round_()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        round_()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _direct_fedavg(experiment, clients, repeats=3):
    """`benchmarks.throughput`'s direct-TF client update over every client, no TFF."""
    # Imported here: the parent, which spawns the measured children, imports no TF.
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from tff_byz import client_inputs, models
    from tff_byz.client_work import local_sgd_update
    config, data = experiment.config, experiment.dataset
    model = models.build_keras_model(config.model, data.input_shape, data.num_classes,
                                     data.normalization, seed=0)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    initial = [v.numpy() for v in model.trainable_variables]
    arrays = [tuple(tf.constant(a) for a in data.client_arrays(int(i))) for i in clients]

    class Forward:
        def forward_pass(self, batch, training=True):
            return collections.namedtuple("Out", "loss")(
                loss_fn(batch["y"], model(batch["x"], training=training)))

    @tf.function
    def update(x, y, seed):
        return local_sgd_update(Forward(), model.trainable_variables,
                                client_inputs.ClientExamples.from_tensors(x, y), seed,
                                epochs=config.local_epochs, batch_size=config.batch_size,
                                learning_rate=config.client_lr)

    def round_():
        for k, (x, y) in enumerate(arrays):
            for v, w in zip(model.trainable_variables, initial):
                v.assign(w)
            update(x, y, tf.constant([0, k], tf.int64))

    round_()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        round_()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _long_run(config) -> dict:
    """`config` through `orchestration.training.run_experiment` (the pipeline's loop, which also
    replaces a worker that dies), with the worker's RSS after every round."""
    # Imported here: the parent, which spawns the measured children, imports no TF.
    # pylint: disable=import-outside-toplevel
    from tff_byz import context
    from orchestration import training
    rss, seconds = [], []

    def on_round(round_num, row):
        del round_num
        rss.append(procstat.rss_mb(context.current().worker_pid))
        seconds.append(row["round_seconds"])

    with context.ExecutionContext():
        with TreePeak(lambda: context.current().worker_pid) as peak:
            summary = training.run_experiment(config, progress=False, on_round=on_round)
    return dict(round_seconds=statistics.median(seconds), worker_peak_mb=peak.worker_mb,
                total_peak_mb=peak.total_mb, worker_rss_mb=rss,
                worker_restarts=summary.get("worker_restarts", 0), status=summary["status"],
                final_test_accuracy=summary["final_test_accuracy"])


def child(spec: dict) -> dict:
    # Imported here: the parent, which spawns the measured children, imports no TF.
    # pylint: disable=import-outside-toplevel
    from tff_byz import context
    workload, mode = spec["workload"], spec["mode"]
    config = _config(workload, **spec.get("overrides", {}))
    result = dict(workload=workload, mode=mode)
    if workload == "long":
        result.update(_long_run(config))
        return result
    with context.ExecutionContext() as tff_context:
        pid = tff_context.worker_pid
        if mode == "value":
            run, state, examples = _by_value_round(config)
        else:
            run, state, experiment, clients = _by_reference_round(config)
            examples = int(sum(experiment.store.counts[clients]))
        _, figures = _timed(run, state, pid, spec["rounds"], spec["warmup"])
        result.update(figures)
        if workload in ("fedavg", "fixed"):
            per_round = config.local_steps * config.batch_size * config.num_clients \
                if config.local_steps else examples * config.local_epochs
            result["examples_per_second"] = per_round / result["round_seconds"]
        if mode == "reference" and workload == "momentum":
            result["plain_tf_seconds"] = _plain_tf_momentum(experiment, clients)
        if mode == "reference" and workload == "fedavg":
            result["direct_tf_seconds"] = _direct_fedavg(experiment, clients)
    return result


def _run_child(spec: dict) -> dict:
    command = [sys.executable, "-m", "benchmarks.client_data", f"--child={json.dumps(spec)}"]
    if FLAGS.data_dir:
        command.append(f"--data_dir={FLAGS.data_dir}")
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark child {spec} failed:\n{output.stderr[-3000:]}")


def side_by_side(workload: str) -> dict:
    runs = {"value": [], "reference": []}
    for _ in range(FLAGS.repeats):
        for mode in ("value", "reference"):
            runs[mode].append(_run_child(dict(workload=workload, mode=mode, rounds=FLAGS.rounds,
                                              warmup=FLAGS.warmup)))
    keys = ["round_seconds", "worker_cpu_seconds", "worker_peak_mb", "total_peak_mb"]
    if workload in ("fedavg", "fixed"):
        keys.append("examples_per_second")
    medians = {mode: {k: statistics.median(r[k] for r in rs) for k in keys}
               for mode, rs in runs.items()}
    ratios = [v["round_seconds"] / r["round_seconds"]
              for v, r in zip(runs["value"], runs["reference"])]
    settings = WORKLOADS[workload]
    print(f"\n{workload}: {settings}, {FLAGS.rounds} timed rounds x {FLAGS.repeats} runs per mode")
    print(f"  {'':10} {'round s':>9} {'worker cpu s':>13} {'worker MB':>10} {'process MB':>11}"
          + (f" {'examples/s':>11}" if "examples_per_second" in keys else ""))
    for mode in ("value", "reference"):
        m = medians[mode]
        print(f"  {mode:10} {m['round_seconds']:9.3f} {m['worker_cpu_seconds']:13.3f} "
              f"{m['worker_peak_mb']:10.0f} {m['total_peak_mb']:11.0f}"
              + (f" {m['examples_per_second']:11.0f}" if "examples_per_second" in keys else ""))
    print(f"  speed-up by reference (value round / reference round), run by run: "
          f"{', '.join(f'{r:.2f}x' for r in ratios)}")
    figures = dict(settings=settings, medians=medians, speedups=ratios, runs=runs)
    reference = runs["reference"]
    if workload == "momentum":
        plain = statistics.median(r["plain_tf_seconds"] for r in reference)
        print(f"  the same {settings['num_clients']} mini-batch steps in plain TF: {plain:.3f} s; "
              f"reference round / plain TF = {medians['reference']['round_seconds'] / plain:.1f}x")
        figures["plain_tf_seconds"] = plain
    if workload == "fedavg":
        direct = statistics.median(r["direct_tf_seconds"] for r in reference)
        print(f"  direct-TF client updates (benchmarks.throughput's baseline): {direct:.3f} s; "
              f"reference round / direct = {medians['reference']['round_seconds'] / direct:.2f}x")
        figures["direct_tf_seconds"] = direct
    if workload == "fixed":
        n = settings["num_clients"]
        for mode in ("value", "reference"):
            m = medians[mode]
            print(f"  per-client fixed cost, {mode}: {1000 * m['round_seconds'] / n:.1f} ms wall, "
                  f"{1000 * m['worker_cpu_seconds'] / n:.1f} ms worker CPU")
    return figures


def store_cost() -> dict:
    # Imported here: the parent, which spawns the measured children, imports no TF.
    # pylint: disable=import-outside-toplevel
    from orchestration import experiment as experiment_lib
    from tff_byz.datasets import CACHE_ENV, load_federated_dataset
    figures = {}
    for name in FLAGS.store_datasets:
        cache = tempfile.mkdtemp(prefix="store-bench-")
        previous = os.environ.get(CACHE_ENV)
        try:
            # The decoded source comes from the usual cache; only the store starts empty.
            config = _config("fedavg", dataset=name, model="mlp" if name != "cifar10" else
                             "cifar_cnn", num_clients=200)
            data = load_federated_dataset(name, data_dir=config.data_dir, num_clients=200, seed=0)
            os.environ[CACHE_ENV] = cache
            t0 = time.perf_counter()
            store = experiment_lib.client_store(config, data)
            write = time.perf_counter() - t0
            t0 = time.perf_counter()
            experiment_lib.client_store(config, data)
            reopen = time.perf_counter() - t0
            size = sum(os.path.getsize(os.path.join(store.directory, f))
                       for f in os.listdir(store.directory))
        finally:
            if previous is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = previous
            shutil.rmtree(cache, ignore_errors=True)
        print(f"\nstore, {name} (200 clients): written in {write:.2f} s ({size / 1e6:.0f} MB, "
              f"{store.x_dtype} pixels); opened and checked again in {reopen:.2f} s")
        figures[name] = dict(write_seconds=write, reopen_seconds=reopen, megabytes=size / 1e6,
                             x_dtype=store.x_dtype)
    return figures


def long_run() -> dict:
    spec = dict(workload="long", mode="reference",
                overrides=dict(aggregator=FLAGS.long_aggregator, rounds=FLAGS.long_rounds,
                               eval_every=FLAGS.long_rounds // 10 or 1))
    result = _run_child(spec)
    rss = result["worker_rss_mb"]
    at = {r: rss[r - 1] for r in (1, 20, 50, 100, 150, 200) if r <= len(rss)}
    print(f"\nlong: {WORKLOADS['long']} aggregator={FLAGS.long_aggregator}, "
          f"{FLAGS.long_rounds} rounds by reference through the pipeline's loop: round "
          f"{result['round_seconds']:.2f} s (median), worker peak {result['worker_peak_mb']:.0f} "
          f"MB, whole process {result['total_peak_mb']:.0f} MB, status {result['status']}, "
          f"final accuracy {result['final_test_accuracy']}, worker restarts "
          f"{result['worker_restarts']}")
    print("  worker RSS after round " + ", ".join(f"{r}: {v:.0f} MB" for r, v in at.items()))
    if 20 in at and len(rss) >= 200:
        print(f"  RSS at round 200 / RSS at round 20 = {rss[199] / at[20]:.3f}")
    return result


def cifar_round() -> dict:
    result = _run_child(dict(workload="cifar", mode="reference", rounds=2, warmup=1,
                             overrides=dict(rounds=400)))
    print(f"\ncifar: {WORKLOADS['cifar']} learning round by reference: "
          f"{result['round_seconds']:.1f} s, worker peak {result['worker_peak_mb']:.0f} MB, "
          f"whole process {result['total_peak_mb']:.0f} MB; 400 rounds at this pace: "
          f"{400 * result['round_seconds'] / 3600:.1f} h")
    return result


def main(argv):
    FLAGS(argv)
    if FLAGS.child:
        print("RESULT " + json.dumps(child(json.loads(FLAGS.child))), flush=True)
        return 0
    unknown = sorted(set(FLAGS.parts) - set(PARTS))
    if unknown:
        print(f"error: --parts: unknown {', '.join(unknown)}; valid choices: {', '.join(PARTS)}",
              file=sys.stderr)
        return 2
    figures = {}
    for part in FLAGS.parts:
        if part in ("momentum", "fedavg", "fixed"):
            figures[part] = side_by_side(part)
        elif part == "store":
            figures[part] = store_cost()
        elif part == "long":
            figures[part] = long_run()
        else:
            figures[part] = cifar_round()
    if FLAGS.output:
        files.write_json_atomic(FLAGS.output, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
