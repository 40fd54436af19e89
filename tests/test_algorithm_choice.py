"""algorithms.algorithm_class and each algorithm's `validate` (no TFF execution)."""

import re
import types

import pytest

from algorithms import (AGGREGATOR_CHOICES, DecentralizedPDMM, FedAvg, FedLAW, MomentumSGD, PDMM,
                        algorithm_class)
from orchestration.config import ExperimentConfig
from tff_byz.errors import ConfigError


def _class(aggregator, client_work="local_sgd", topology="star"):
    return algorithm_class(AGGREGATOR_CHOICES.resolve(aggregator), client_work, topology)


def _config(**changes):
    """The attributes `validate` reads, at ExperimentConfig's defaults."""
    values = dict(aggregator="mean", attack="none", client_work="local_sgd", topology="star",
                  server_lr=1.0, num_clients=20, clients_per_round=0, attack_message="delta")
    values.update(changes)
    return types.SimpleNamespace(**values)


def _refuses(cls, config, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        cls.validate(config)


# ---------------------------------------------------------------- algorithm_class

@pytest.mark.parametrize("aggregator,client_work,topology,expected", [
    ("mean", "local_sgd", "star", FedAvg),
    ("median", "local_sgd", "star", FedAvg),
    ("bucketing:s=2+median", "local_sgd", "star", FedAvg),
    ("nnm+clip+krum", "local_sgd", "star", FedAvg),
    ("mean", "momentum_sgd", "star", MomentumSGD),
    ("bucketing:s=2+trimmed_mean", "momentum_sgd", "star", MomentumSGD),
    ("fedlaw", "local_sgd", "star", FedLAW),
    ("fedlaw:beta=0.01", "local_sgd", "star", FedLAW),
    ("pdmm", "local_sgd", "star", PDMM),
    ("pdmm:c=0.2", "local_sgd", "star", PDMM),
    ("pdmm", "local_sgd", "ring", DecentralizedPDMM),
    ("pdmm", "local_sgd", "complete", DecentralizedPDMM),
    ("pdmm", "local_sgd", "rgg", DecentralizedPDMM),
    # the class is picked by these rules alone; `validate` then refuses what it cannot take
    ("fedlaw", "momentum_sgd", "star", FedLAW),
    ("fedlaw", "local_sgd", "ring", FedLAW),
    ("pdmm", "momentum_sgd", "star", PDMM),
    ("mean", "local_sgd", "ring", FedAvg),
    ("mean", "momentum_sgd", "ring", MomentumSGD),
])
def test_algorithm_class(aggregator, client_work, topology, expected):
    assert _class(aggregator, client_work, topology) is expected


def test_decentralized_pdmm_is_a_pdmm():
    assert issubclass(DecentralizedPDMM, PDMM)


@pytest.mark.parametrize("spec,algorithm", [
    ("bucketing+fedlaw", "fedlaw"),
    ("fedlaw+median", "fedlaw"),
    ("clip+pdmm", "pdmm"),
    ("pdmm+fedlaw", "pdmm"),
    ("fedlaw+pdmm", "fedlaw"),
])
def test_training_algorithms_cannot_be_composed(spec, algorithm):
    resolved = AGGREGATOR_CHOICES.resolve(spec)
    canonical = "+".join(c.canonical for c in resolved)
    with pytest.raises(ConfigError, match="^" + re.escape(
            f"--aggregator={canonical!r}: {algorithm} is a training algorithm and cannot be "
            "composed with '+'.") + "$"):
        algorithm_class(resolved, "local_sgd", "star")


def test_composition_message_names_the_canonical_spec():
    with pytest.raises(ConfigError) as info:
        _class("bucketing+fedlaw")
    assert str(info.value) == (
        "--aggregator='bucketing:s=2,variant=mean+fedlaw:beta=0.001,weight_step=full,"
        "clip=false,loss_filter=false,loss=last_epoch': fedlaw is a training algorithm and "
        "cannot be composed with '+'.")


# ---------------------------------------------------------------- validate

def test_fedavg_validate():
    FedAvg.validate(_config())
    FedAvg.validate(_config(attack="sign_flip", server_lr=0.5))
    _refuses(FedAvg, _config(topology="ring", aggregator="median"),
             "--topology=ring needs --aggregator=pdmm (decentralized PDMM); "
             "got --aggregator='median'.")


def test_momentum_validate():
    MomentumSGD.validate(_config(client_work="momentum_sgd"))
    MomentumSGD.validate(_config(client_work="momentum_sgd", attack="none", server_lr=0.5))
    for attack in ("sign_flip", "sign_flip:mode=ascent", "scaling:scale=10", "label_flip",
                   "backdoor", "lie:z=1.5,ddof=1", "ipm:eps=1", "min_max", "min_sum", "mimic",
                   "gaussian+ipm", "bit_flip:bits=sign,p=0.3"):
        MomentumSGD.validate(_config(client_work="momentum_sgd", attack=attack,
                                     byzantine_fraction=0.3))
    _refuses(MomentumSGD, _config(client_work="momentum_sgd", attack="random_params:nu1=-2"),
             "--attack='random_params:nu1=-2.0' cannot run with --client_work=momentum_sgd: it "
             "trains from θ + ε and reports the model difference ψ − θ; a momentum_sgd client "
             "sends its momentum.")
    _refuses(MomentumSGD, _config(client_work="momentum_sgd", attack="double"),
             "--attack='random_params:start=5' cannot run with --client_work=momentum_sgd: it "
             "trains from θ + ε and reports the model difference ψ − θ; a momentum_sgd client "
             "sends its momentum.")
    _refuses(MomentumSGD, _config(client_work="momentum_sgd", attack="zero+weight_lying"),
             "--attack='weight_lying' cannot run with --client_work=momentum_sgd: it changes "
             "only the aggregation weight; momentum_sgd weighs every client 1.")
    _refuses(MomentumSGD, _config(client_work="momentum_sgd", attack="sign_flip",
                                  attack_message="model"),
             "--attack_message=model needs --client_work=local_sgd: a momentum_sgd client "
             "sends its momentum, not a model.")
    _refuses(MomentumSGD, _config(client_work="momentum_sgd", topology="complete"),
             "--topology=complete needs --aggregator=pdmm (decentralized PDMM); "
             "got --aggregator='mean'.")


def test_fedlaw_validate():
    FedLAW.validate(_config(aggregator="fedlaw"))
    FedLAW.validate(_config(aggregator="fedlaw", attack="sign_flip"))
    _refuses(FedLAW, _config(aggregator="fedlaw", server_lr=0.5),
             "--aggregator=fedlaw steps θ + Σ w_i Δ_i (its server step is the client lr α); "
             "--server_lr must be 1; got 0.5.")
    _refuses(FedLAW, _config(aggregator="fedlaw", client_work="momentum_sgd"),
             "--aggregator=fedlaw needs --client_work=local_sgd; got --client_work=momentum_sgd.")
    _refuses(FedLAW, _config(aggregator="fedlaw", topology="ring"),
             "--topology=ring needs --aggregator=pdmm (decentralized PDMM); "
             "got --aggregator='fedlaw'.")


def test_pdmm_validate():
    PDMM.validate(_config(aggregator="pdmm"))
    PDMM.validate(_config(aggregator="pdmm", clients_per_round=5))  # centralized: partial ok
    _refuses(PDMM, _config(aggregator="pdmm", client_work="momentum_sgd"),
             "--aggregator=pdmm runs its own client work (K prox steps); --client_work must stay "
             "local_sgd; got momentum_sgd.")
    _refuses(PDMM, _config(aggregator="pdmm", server_lr=0.5),
             "--aggregator=pdmm has no server learning rate (w_s is the mean of the messages); "
             "--server_lr must be 1; got 0.5.")


def test_decentralized_pdmm_validate():
    DecentralizedPDMM.validate(_config(aggregator="pdmm", topology="ring"))
    DecentralizedPDMM.validate(_config(aggregator="pdmm", topology="ring", clients_per_round=20))
    _refuses(DecentralizedPDMM, _config(aggregator="pdmm", topology="ring", clients_per_round=5),
             "--topology=ring: decentralized PDMM runs every node every round; "
             "--clients_per_round must be 0; got 5.")
    _refuses(DecentralizedPDMM, _config(aggregator="pdmm", topology="rgg", clients_per_round=19),
             "--topology=rgg: decentralized PDMM runs every node every round; "
             "--clients_per_round must be 0; got 19.")
    _refuses(DecentralizedPDMM, _config(aggregator="pdmm", topology="ring",
                                        client_work="momentum_sgd"),
             "--aggregator=pdmm runs its own client work (K prox steps); --client_work must stay "
             "local_sgd; got momentum_sgd.")


# ---------------------------------------------------------------- through ExperimentConfig

@pytest.mark.parametrize("settings,message", [
    (dict(aggregator="pdmm", topology="ring", clients_per_round=5),
     "--topology=ring: decentralized PDMM runs every node every round; --clients_per_round must "
     "be 0; got 5."),
    (dict(aggregator="pdmm", client_work="momentum_sgd"),
     "--aggregator=pdmm runs its own client work (K prox steps); --client_work must stay "
     "local_sgd; got momentum_sgd."),
    (dict(aggregator="fedlaw", server_lr=0.5),
     "--aggregator=fedlaw steps θ + Σ w_i Δ_i (its server step is the client lr α); --server_lr "
     "must be 1; got 0.5."),
    (dict(aggregator="median", topology="ring"),
     "--topology=ring needs --aggregator=pdmm (decentralized PDMM); got --aggregator='median'."),
    (dict(client_work="momentum_sgd", attack="weight_lying", byzantine_fraction=0.2),
     "--attack='weight_lying' cannot run with --client_work=momentum_sgd: it changes only the "
     "aggregation weight; momentum_sgd weighs every client 1."),
    (dict(aggregator="bucketing+fedlaw"),
     "--aggregator='bucketing:s=2,variant=mean+fedlaw:beta=0.001,weight_step=full,clip=false,"
     "loss_filter=false,loss=last_epoch': fedlaw is a training algorithm and cannot be composed "
     "with '+'."),
])
def test_experiment_config_validate_uses_the_algorithm(settings, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        ExperimentConfig(**settings).validate()


@pytest.mark.parametrize("settings", [
    dict(aggregator="pdmm", topology="ring"),
    dict(aggregator="pdmm", clients_per_round=5),
    dict(aggregator="fedlaw", attack="sign_flip", byzantine_fraction=0.2),
    dict(aggregator="bucketing:s=2+median", client_work="momentum_sgd"),
])
def test_experiment_config_valid_combinations(settings):
    ExperimentConfig(**settings).validate()
