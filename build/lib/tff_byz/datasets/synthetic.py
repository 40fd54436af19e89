"""TFF's tiny synthetic EMNIST, for fast smoke tests (no files needed).

`tff.simulation.datasets.emnist.get_synthetic()` (TFF 0.87) returns a
`TestClientData` with two clients, "synthetic1" and "synthetic2", holding the
*same* ten hard-coded 28x28 digit images, one per label 0-9, as
`OrderedDict(label=int32 scalar, pixels=float32 [28, 28])` with pixels in
[0, 1] and background 1.0 (EMNIST style). Only ten images are distinct, so it
checks plumbing, not learning.

Mapped to the package format: x float32 [20, 28, 28, 1], y int32 [20],
writers = the two TFF client ids; the test set is the pool of all 20
examples (there is nothing else to test on).
"""

from __future__ import annotations

import numpy as np
import tensorflow_federated as tff

from tff_byz.datasets import source

__all__ = ["load_synthetic"]

# Large enough to pull each client's 10 examples out in one batch.
_READ_BATCH = 1024


def load_synthetic() -> source.SourceData:
    """20 examples [28, 28, 1] in [0, 1], 10 classes, two writers of 10 each."""
    client_data = tff.simulation.datasets.emnist.get_synthetic()
    writers = tuple(sorted(client_data.client_ids))
    xs, ys, ws = [], [], []
    for index, writer in enumerate(writers):
        # Eager tf.data iteration only: no TFF computation runs here.
        dataset = client_data.create_tf_dataset_for_client(writer).batch(_READ_BATCH)
        for batch in dataset.as_numpy_iterator():
            xs.append(batch["pixels"].astype(np.float32)[..., np.newaxis])
            ys.append(batch["label"].astype(np.int32))
            ws.append(np.full(len(ys[-1]), index, np.int32))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return source.SourceData(
        name="synthetic", num_classes=10,
        train_x=x, train_y=y, test_x=x.copy(), test_y=y.copy(),
        writer_ids=writers, train_writer=np.concatenate(ws))
