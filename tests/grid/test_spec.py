"""Grid TOML -> cells: product order, exclusions, table axes, identity hashes, every error."""

import collections
import dataclasses
import pathlib
import tomllib

import pytest

from aggregators import AGGREGATORS
from orchestration.config import ExperimentConfig
from orchestration.grid import spec

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"

BASE = {"settings": {"num_clients": 10, "rounds": 2, "byzantine_fraction": 0.2},
        "axes": {"aggregator": ["mean", "median"], "attack": ["none", "sign_flip"], "seed": [0, 1]}}


def cells_of(document, output_dir="out/runs"):
    return spec.parse_grid(document, "g.toml").cells(output_dir)


def test_product_in_axis_order_with_labels_and_run_names():
    cells = cells_of(BASE)
    assert len(cells) == 8
    assert [dict(c.axes) for c in cells[:3]] == [
        {"aggregator": "mean", "attack": "none", "seed": 0},
        {"aggregator": "mean", "attack": "none", "seed": 1},
        {"aggregator": "mean", "attack": "sign_flip", "seed": 0}]
    first = cells[0]
    assert first.config.num_clients == 10 and first.config.rounds == 2
    assert first.config.aggregator == AGGREGATORS.resolve("mean")[0].canonical  # resolved
    assert first.config.output_dir == "out/runs"
    assert first.run_name == f"digits_iid_n10_mean_none_f0.2_s0_{first.id[:8]}"
    assert len({c.id for c in cells}) == 8


def test_exclusions_match_every_key_and_lists_match_any_value():
    document = dict(BASE, exclude=[{"aggregator": "mean", "attack": ["sign_flip"]},
                                   {"seed": 1, "attack": "none"}])
    kept = {(c.axes["aggregator"], c.axes["attack"], c.axes["seed"]) for c in cells_of(document)}
    assert kept == {("mean", "none", 0), ("median", "none", 0), ("median", "sign_flip", 0),
                    ("median", "sign_flip", 1)}


def test_exclusion_on_a_setting_outside_the_axes_uses_its_value():
    document = dict(BASE, exclude=[{"byzantine_fraction": 0.2, "attack": "none"}])
    assert {c.axes["attack"] for c in cells_of(document)} == {"sign_flip"}


def test_table_axis_sets_several_fields_and_labels_the_cell():
    document = {"settings": {"num_clients": 10, "rounds": 2},
                "axes": {"heterogeneity": [{"partition": "iid"},
                                           {"partition": "q", "q": 0.9, "label": "q=0.9"},
                                           {"partition": "dirichlet", "alpha": 0.3}]},
                "exclude": [{"heterogeneity": "q=0.9"}]}
    cells = cells_of(document)
    assert [c.axes["heterogeneity"] for c in cells] == ["partition=iid",
                                                        "partition=dirichlet,alpha=0.3"]
    assert (cells[1].config.partition, cells[1].config.alpha) == ("dirichlet", 0.3)


def test_identity_ignores_location_defaults_and_int_vs_float():
    a = cells_of({"settings": {"byzantine_fraction": 0, "momentum": 0.9}}, "x/runs")[0]
    b = cells_of({"settings": {"byzantine_fraction": 0.0, "data_dir": "/data",
                               "tff_workers": "localhost:1234"}}, "y/runs")[0]
    assert a.id == b.id
    assert a.id != cells_of({"settings": {"client_lr": 0.05}})[0].id
    assert a.id != cells_of({"settings": {"rounds": 31}})[0].id  # rounds change results (FedLAW)


def test_editing_the_grid_keeps_the_ids_of_unchanged_cells():
    before = {c.id for c in cells_of(BASE)}
    edited = dict(BASE, axes=dict(BASE["axes"], aggregator=["median", "mean", "trimmed_mean"],
                                  seed=[0, 1, 2]))
    after = {c.id for c in cells_of(edited)}
    assert before < after and len(after) == 18


def test_every_config_field_is_accepted_generically():
    """Any ExperimentConfig field (also ones added later) works as a setting and an axis."""
    settings = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)
                if f.name not in spec.RUNNER_FIELDS and f.default is not None}
    (cell,) = cells_of({"settings": settings})
    assert cell.config.num_clients == ExperimentConfig().num_clients
    for field in dataclasses.fields(ExperimentConfig):
        if field.name in spec.RUNNER_FIELDS or field.default is None:
            continue
        (cell,) = cells_of({"axes": {field.name: [field.default]}})
        assert cell.axes == {field.name: field.default}


@pytest.mark.parametrize("document, expected", [
    ({"setings": {}}, "g.toml: unknown key(s) ['setings']; valid keys: name, description, settings"),
    ({"settings": {"rouds": 3}}, "g.toml [settings]: unknown setting 'rouds'; valid settings: dataset"),
    ({"settings": {"output_dir": "x"}}, "output_dir is set by pipelines.compare"),
    ({"settings": {"rounds": "3"}}, "g.toml [settings]: rounds must be int; got '3'."),
    ({"settings": {"rounds": 2.5}}, "rounds must be int; got 2.5"),
    ({"settings": {"aggregator": 3}}, "aggregator must be str; got 3"),
    ({"axes": {"seed": 0}}, "g.toml [axes] seed: an axis must be a non-empty list; got 0."),
    ({"axes": {"seed": []}}, "an axis must be a non-empty list"),
    ({"axes": {"seed": [0, 0]}}, "g.toml [axes] seed: duplicate values [0, 0]."),
    ({"axes": {"seeds": [0, 1]}}, "g.toml [axes] seeds: not a setting, so its values must be tables"),
    ({"axes": {"het": [{"partiton": "q"}]}}, "g.toml [axes] het: unknown setting 'partiton'"),
    ({"settings": {"seed": 1}, "axes": {"seed": [0]}}, "seed is both in [settings] and on the axis"),
    ({"axes": {"a": [{"q": 0.5}], "b": [{"q": 0.9}]}}, "q is set by two axes ('a' and 'b')"),
    ({"axes": {"seed": [0]}, "exclude": [{"sed": 0}]}, "g.toml [[exclude]] #1: unknown key 'sed'"),
    ({"exclude": [{}]}, "an empty exclusion would drop every cell"),
    ({"axes": {"attack": ["none", "sign_flip"]}},
     "cell {attack='sign_flip'}: --attack='sign_flip' needs Byzantine clients"),
    ({"axes": {"aggregator": ["bogus"]}}, "--aggregator: unknown name 'bogus'; valid choices: mean"),
    ({"axes": {"aggregator": ["median", "median:even=mean"]}}, "are the same experiment"),
])
def test_invalid_grids_name_the_key_and_value(document, expected):
    with pytest.raises(spec.GridError) as error:
        cells_of(document)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_load_grid_errors(tmp_path):
    with pytest.raises(spec.GridError, match="grid file not found"):
        spec.load_grid(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[settings\n")
    with pytest.raises(spec.GridError, match="bad.toml: invalid TOML"):
        spec.load_grid(str(bad))


def test_quick_example_expands():
    grid = spec.load_grid(str(EXAMPLES / "quick.toml"))
    cells = grid.cells("runs")
    assert len(cells) >= 8
    assert {c.config.dataset for c in cells} == {"digits"}
    assert {c.axes["seed"] for c in cells} == {0, 1}


def test_fedlaw_mnist_example_is_the_papers_protocol():
    cells = spec.load_grid(str(EXAMPLES / "fedlaw_mnist.toml")).cells("runs")
    fedlaw = [c.config for c in cells if c.config.aggregator.startswith("fedlaw")]
    assert fedlaw
    for config in fedlaw:
        assert (config.dataset, config.num_clients, config.partition, config.q) == ("mnist", 200, "q", 0.9)
        assert (config.byzantine_selection, config.byzantine_fraction) == ("label_groups", 0.4)
        assert (config.client_lr, config.local_epochs, config.batch_size, config.rounds) == (
            0.01, 3, 64, 200)
    assert {c.axes["attack"].split(":")[0] for c in cells} >= {"inverse_gradient", "label_flip"}


def test_pdmm_mnist_example_parses():
    with open(EXAMPLES / "pdmm_mnist.toml", "rb") as f:
        document = tomllib.load(f)
    grid = spec.parse_grid(document, "pdmm_mnist.toml")
    aggregators = [value["aggregator"] for value in grid.axes["algorithm"]]
    assert aggregators == ["pdmm", "pdmm:theta=0.5", "mean", "median"]
    assert set(grid.axes["attack"]) == {"sign_flip", "bit_flip", "gaussian"}
    cells = grid.cells("runs")
    assert {c.config.dataset for c in cells} == {"mnist"}
    assert {c.config.num_clients for c in cells} == {10}
    assert len(cells) == 4 * 3 * 2 * 5


def test_fedlaw_mnist_lie_scored_example_stops_like_the_authors_code():
    cells = spec.load_grid(str(EXAMPLES / "fedlaw_mnist_lie_scored.toml")).cells("runs")
    configs = [c.config for c in cells]
    assert collections.Counter(c.model for c in configs) == {"mlp": 5, "mlp_torch": 5}
    assert {(c.stop_test_loss, c.eval_every, c.rounds) for c in configs} == {(9.0, 1, 200)}
    assert all({"preset=fedlaw_code", "start=2"} <= set(c.attack.split(":")[1].split(","))
               for c in configs)
    assert sorted(c.seed for c in configs) == sorted(list(range(5)) * 2)


def test_fedlaw_mnist_lie_example_is_the_authors_lie_with_its_variants():
    cells = spec.load_grid(str(EXAMPLES / "fedlaw_mnist_lie.toml")).cells("runs")
    assert len(cells) == 3 * 5
    configs = [c.config for c in cells]
    assert all(c.attack.startswith("lie:") and {"preset=fedlaw_code", "start=2"} <=
               set(c.attack.split(":")[1].split(",")) for c in configs)
    assert {(c.dataset, c.num_clients, c.q, c.byzantine_fraction, c.rounds) for c in configs} == {
        ("mnist", 200, 0.9, 0.4, 200)}
    variants = collections.Counter((c.aggregator.split(",")[0], c.q_mode) for c in configs)
    assert variants == {("fedlaw:beta=0.0006", "sample"): 5, ("fedlaw:beta=0.0003", "sample"): 5,
                        ("fedlaw:beta=0.0006", "exact"): 5}
