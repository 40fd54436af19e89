"""Throughput of FedAvg rounds vs plain Keras training, side by side in one run.

Both train the same model on the same examples with the same batch size, one
local epoch per round (every client participates) vs one Keras epoch over the
pooled examples. Prints examples/s for each and the ratio FedAvg ÷ Keras (goal
≥ 0.7), plus where FedAvg's time goes: the same client-update TF function run
directly (no TFF) isolates TFF's overhead (serialising client data and model,
the gRPC round trip to the worker, aggregation).

    python -m benchmarks.throughput                          # digits, small_mlp
    python -m benchmarks.throughput --dataset=mnist --data_dir=../shared/data --model=mlp
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

from orchestration.config import DEFAULT_MODELS  # noqa: E402
from tff_byz import client_inputs, context, datasets, fedavg, files, models  # noqa: E402
from tff_byz.client_work import local_sgd_update  # noqa: E402

flags.DEFINE_string("dataset", "digits", "Dataset (see pipelines.train).")
flags.DEFINE_string("data_dir", None, "Directory of real datasets.")
flags.DEFINE_string("model", None, "Model (default: the dataset's).")
flags.DEFINE_integer("num_clients", 10, "Clients (all participate every round).")
flags.DEFINE_integer("batch_size", 32, "Batch size for both.")
flags.DEFINE_integer("rounds", 10, "Timed rounds / epochs (after one warm-up each).")
flags.DEFINE_float("lr", 0.05, "SGD learning rate for both.")
flags.DEFINE_string("output", None, "Also write the figures as JSON here.")
FLAGS = flags.FLAGS


def _time(fn, repeats):
    fn()  # warm-up: tracing, compilation, worker start-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv):
    FLAGS(argv)
    data = datasets.load_federated_dataset(FLAGS.dataset, data_dir=FLAGS.data_dir,
                                           num_clients=FLAGS.num_clients, seed=0)
    model_name = FLAGS.model or DEFAULT_MODELS[FLAGS.dataset]
    shape, classes, norm = data.input_shape, data.num_classes, data.normalization
    arrays = [data.client_arrays(i) for i in range(data.num_clients)]
    x = np.concatenate([a[0] for a in arrays])
    y = np.concatenate([a[1] for a in arrays])
    examples = len(y)
    batch, lr, rounds = FLAGS.batch_size, FLAGS.lr, FLAGS.rounds

    keras_model = models.build_keras_model(model_name, shape, classes, norm, seed=0)
    initial = fedavg.model_weights_from_keras(keras_model)
    model_fn = models.make_model_fn(model_name, shape, classes, norm)
    process = fedavg.build_fedavg_process(model_fn, initial, local_epochs=1, batch_size=batch,
                                          client_lr=lr)

    with context.ExecutionContext():
        inputs = [client_inputs.make_client_input(
            data.client_data.create_tf_dataset_for_client(cid), i)
            for i, cid in enumerate(data.client_ids)]
        state = [process.initialize()]

        def fedavg_round():
            state[0] = process.next(state[0], inputs).state

        fedavg_seconds = _time(fedavg_round, rounds)

    # The same client update as plain TF (no TFF): the client work's math alone.
    direct_model = models.build_keras_model(model_name, shape, classes, norm, seed=0)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    client_tensors = [(tf.constant(a), tf.constant(b)) for a, b in arrays]

    class _Forward:  # the minimal VariableModel surface local_sgd_update uses
        def forward_pass(self, batch, training=True):
            logits = direct_model(batch["x"], training=training)
            return collections.namedtuple("Out", "loss")(loss_fn(batch["y"], logits))

    forward = _Forward()

    @tf.function
    def update(x, y, seed):
        return local_sgd_update(forward, direct_model.trainable_variables,
                                client_inputs.ClientExamples.from_tensors(x, y), seed, epochs=1,
                                batch_size=batch, learning_rate=lr)

    def direct_round():
        for i, (cx, cy) in enumerate(client_tensors):
            for v, w in zip(direct_model.trainable_variables, initial.trainable):
                v.assign(w)
            update(cx, cy, tf.constant([0, i], tf.int64))

    direct_seconds = _time(direct_round, rounds)

    baseline = models.build_keras_model(model_name, shape, classes, norm, seed=0)
    baseline.compile(optimizer=tf.keras.optimizers.SGD(lr), loss=loss_fn)

    def keras_epoch():
        baseline.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)

    keras_seconds = _time(keras_epoch, rounds)

    figures = collections.OrderedDict(
        dataset=FLAGS.dataset, model=model_name, parameters=models.count_parameters(keras_model),
        clients=data.num_clients, examples_per_round=examples, batch_size=batch,
        keras_examples_per_second=examples / keras_seconds,
        fedavg_examples_per_second=examples / fedavg_seconds,
        direct_client_update_examples_per_second=examples / direct_seconds,
        ratio_fedavg_over_keras=keras_seconds / fedavg_seconds,
        tff_overhead_seconds_per_round=fedavg_seconds - direct_seconds,
        fedavg_round_seconds=fedavg_seconds, keras_epoch_seconds=keras_seconds,
        direct_round_seconds=direct_seconds)
    print(f"throughput: {FLAGS.dataset}, {model_name} ({figures['parameters']:,} params), "
          f"{data.num_clients} clients, {examples} examples/round, batch {batch}, {rounds} timed rounds")
    print(f"  plain Keras fit            {figures['keras_examples_per_second']:10.0f} examples/s")
    print(f"  FedAvg round (TFF)         {figures['fedavg_examples_per_second']:10.0f} examples/s")
    print(f"  client update, no TFF      {figures['direct_client_update_examples_per_second']:10.0f} examples/s")
    print(f"  ratio FedAvg / Keras       {figures['ratio_fedavg_over_keras']:10.2f}   (goal >= 0.7)")
    print(f"  TFF overhead per round     {figures['tff_overhead_seconds_per_round']:10.3f} s "
          f"of {fedavg_seconds:.3f} s")
    if FLAGS.output:
        files.write_json_atomic(FLAGS.output, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
