"""Data poisoning (spec `attacks.md` §2): label flips and the backdoor trigger, applied to
the Byzantine clients' examples as TFF's worker reads them.

This module is the `--attack` entries and their checks (no TensorFlow);
`attacks.poisoning.transforms` the label and image transforms (TensorFlow and NumPy) and the
attacks bound to a run.
"""

from __future__ import annotations

from typing import Optional

from attacks.params import attack_entry, probability
from tff_byz.registry import Param, non_negative, positive

__all__ = ["ENTRIES"]


def _target(value) -> Optional[str]:
    if value == "random":
        return None
    try:
        return None if int(value) >= 0 else "must be random or a label >= 0"
    except ValueError:
        return "must be random or a label >= 0"


def _fraction(value) -> Optional[str]:
    return None if 0.0 < value <= 1.0 else "must be in (0, 1]"


ENTRIES = (
    attack_entry(
        "label_flip", "attacks.poisoning.transforms:build_label_flip",
        "data poisoning: every training label l → L−1−l, or `label_map=a:b;c:d`.", "data",
        label_map=Param(str, "", "explicit label map a:b;c:d (identity elsewhere); empty: "
                        "L−1−l")),
    attack_entry(
        "backdoor", "attacks.poisoning.transforms:build_backdoor",
        "data poisoning: stamp a k×k trigger patch and relabel; reports the attack success "
        "rate on triggered test images each evaluation round.", "data",
        size=Param(int, None, "patch size k (default min(8, min(H, W)//2))", check=positive),
        row=Param(int, None, "patch top row (default centred)", check=non_negative),
        col=Param(int, None, "patch left column (default centred)", check=non_negative),
        value=Param(float, 0.0, "patch value in raw pixels [0, 1]", check=probability),
        target=Param(str, "random", "random (per example) or a fixed label", check=_target),
        fraction=Param(float, 1.0, "share of each Byzantine client's examples poisoned",
                       check=_fraction),
        preset=Param(str, "none", "fedlaw_code: k=10 at (9,9), value 0 after normalisation, "
                     "target uniform in 0..8", choices=("none", "fedlaw_code"))),
)
