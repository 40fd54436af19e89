"""The loss a FedLAW client reports (fedlaw.md §3), as a wrapper of its local training.

`last_epoch` (default, free): the mean mini-batch loss of the last local epoch, which the
honest local SGD reports anyway. `start` / `end`: the loss on the client's whole local set
before / after its local training, one extra inference pass (`tff_byz.client_work.
dataset_loss`, batches of the client work's batch size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tff_byz.client_work import dataset_loss, honest_training

__all__ = ["LOSS_AT", "ReportedLoss", "reported_loss"]

LOSS_AT = ("last_epoch", "start", "end")


@dataclasses.dataclass(frozen=True)
class ReportedLoss:
    """A `tff_byz.client_work.LocalTraining` that reports the whole-set loss at `at`
    (`start` or `end`) instead of the training loss; `inner` trains."""
    at: str
    batch_size: int
    inner: Callable = honest_training

    def __call__(self, model, examples, round_info, train):
        if self.at == "start":
            loss = dataset_loss(model, examples, self.batch_size)
            self.inner(model, examples, round_info, train)
            return loss
        self.inner(model, examples, round_info, train)
        return dataset_loss(model, examples, self.batch_size)


def reported_loss(at: str, batch_size: int, inner: Callable = honest_training) -> Callable:
    """`inner` reporting the loss `at` (`LOSS_AT`); `inner` itself for `last_epoch`."""
    if at not in LOSS_AT:
        raise ValueError(f"fedlaw: loss={at!r}; valid choices: {', '.join(LOSS_AT)}.")
    return inner if at == "last_epoch" else ReportedLoss(at, batch_size, inner)
