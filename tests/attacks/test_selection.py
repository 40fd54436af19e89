"""Who is Byzantine (attacks.md §1): counts, label groups, ids, attack-group split."""

import re

import numpy as np
import pytest

from attacks import selection


def test_random_picks_round_f_n_and_is_seeded():
    mask = selection.select_byzantine(20, 0.3, "random", seed=5)
    assert mask.dtype == bool and mask.sum() == 6
    assert np.array_equal(mask, selection.select_byzantine(20, 0.3, "random", seed=5))
    assert not np.array_equal(mask, selection.select_byzantine(20, 0.3, "random", seed=6))
    # round half up: 0.25 · 10 = 2.5 → 3
    assert selection.select_byzantine(10, 0.25, "random", seed=0).sum() == 3
    assert selection.select_byzantine(10, 0.0, "random", seed=0).sum() == 0


def test_label_groups_take_whole_groups():
    # 200 clients in 10 label groups of 20 (FedLAW paper): f = 0.4 → 4 groups, 80 clients.
    groups = np.repeat(np.arange(10), 20)
    mask = selection.select_byzantine(200, 0.4, "label_groups", seed=1, client_groups=groups)
    assert mask.sum() == 80
    chosen = np.unique(groups[mask])
    assert len(chosen) == 4
    assert np.array_equal(mask, np.isin(groups, chosen))


def test_label_groups_record_the_actual_fraction_of_unequal_groups():
    groups = np.array([0, 0, 0, 1, 2, 2])
    mask = selection.select_byzantine(6, 0.34, "label_groups", seed=0, client_groups=groups)
    sizes = {0: 3, 1: 1, 2: 2}
    assert mask.sum() == sizes[int(np.unique(groups[mask])[0])]  # round(0.34 · 3) = 1 group
    assert selection.split_groups(mask, 1, 0).actual_fraction == pytest.approx(mask.mean())


def test_explicit_ids():
    mask = selection.select_byzantine(8, 0.9, "ids:1,5", seed=0)
    assert np.flatnonzero(mask).tolist() == [1, 5]


@pytest.mark.parametrize("text, fragment", [
    ("ids:1,9", "out of range [0, 8)"), ("ids:", "no ids"), ("ids:a", "must be integers"),
    ("ids:1,1", "repeated"), ("groups", "valid choices"), ("random:3", "valid choices")])
def test_bad_selection_names_the_value(text, fragment):
    with pytest.raises(selection.SelectionError, match=re.escape(fragment)):
        selection.select_byzantine(8, 0.2, text, seed=0)


def test_label_groups_need_a_label_group_split():
    with pytest.raises(selection.SelectionError, match="--partition=q"):
        selection.select_byzantine(8, 0.2, "label_groups", seed=0, client_groups=None)


def test_split_into_halves_larger_first_and_seeded():
    mask = np.zeros(20, bool)
    mask[[1, 4, 6, 9, 11, 17, 19]] = True
    split = selection.split_groups(mask, 2, seed=3)
    assert (split.groups == 0).sum() == 4 and (split.groups == 1).sum() == 3  # ⌈7/2⌉ first
    assert np.array_equal(split.byzantine, mask)
    assert np.all(split.groups[~mask] == -1)
    assert np.array_equal(split.groups, selection.split_groups(mask, 2, seed=3).groups)
    single = selection.split_groups(mask, 1, seed=3)
    assert np.all(single.groups[mask] == 0) and single.ids == [1, 4, 6, 9, 11, 17, 19]
