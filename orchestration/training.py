"""The training loop of one experiment: rounds, evaluation, metrics, checkpoints.

A run is deterministic for its config: initial weights come from a seeded Keras
model, client sampling from (seed, round), client shuffles from the process
state. `--resume` reloads the latest checkpoint whose rounds all have their
metrics rows (`orchestration.checkpoints`) and continues, so a resumed run's
metrics equal an uninterrupted run's. Ctrl-C/SIGTERM save the last round whose
metrics row is written and mark the run resumable. The loop drives any
`algorithms.Algorithm` and knows none by name.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import shutil
import sys
import time
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tqdm

from aggregators.base import too_few_clients_reason
from orchestration import checkpoints, run_directory, stopping
from orchestration import experiment as experiment_lib
from orchestration.config import ConfigError, ExperimentConfig
from orchestration.experiment import Experiment
from orchestration.run_directory import RunPaths
from tff_byz import context as context_lib
from tff_byz import files, processes
from tff_byz.datasets import store as store_lib
from tff_byz.files import write_json_atomic

__all__ = ["run_experiment", "WORKER_RESTARTS_ENV"]


def _flatten(structure, prefix="") -> "collections.OrderedDict[str, Any]":
    """Nested metrics → `a/b/c` keys (empty structures vanish)."""
    flat = collections.OrderedDict()
    if isinstance(structure, dict):
        items = structure.items()
    elif hasattr(structure, "_asdict"):
        items = structure._asdict().items()
    else:
        flat[prefix] = np.asarray(structure).tolist()
        return flat
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def _is_finite(weights) -> bool:
    return all(np.all(np.isfinite(np.asarray(w))) for w in tf.nest.flatten(weights))


def run_experiment(config: ExperimentConfig, *, resume: bool = False, overwrite: bool = False,
                   progress: bool = True, on_round: Optional[Callable[[int, dict], None]] = None
                   ) -> dict[str, Any]:
    """Runs (or resumes) one experiment; returns its summary.

    Must be called inside an open `tff_byz.context.ExecutionContext`. Raises
    `ConfigError` (bad settings or run directory, nothing written) before any
    file is touched.
    """
    config = config.resolved()
    run_directory.prepare_run_directory(config, resume=resume, overwrite=overwrite)
    try:  # loads data and builds the process: bad settings fail here, before writing
        experiment = Experiment(config)
        experiment.verify_store()
    except (ValueError, FileNotFoundError, store_lib.StoreError) as error:
        raise ConfigError(str(error).splitlines()[0]) from error
    with contextlib.ExitStack() as held:
        try:
            os.makedirs(config.output_dir, exist_ok=True)
            held.enter_context(files.exclusive(
                run_directory.lock_path(config),
                run_directory.in_use(RunPaths(os.path.join(config.output_dir, config.run_name)))))
        except OSError as error:  # e.g. an immutable directory, which os.access does not see
            raise run_directory.RunDirectoryError(f"--output_dir={config.output_dir}: cannot write there "
                                    f"({error.strerror or error}).") from None
        except files.BusyError as error:
            raise run_directory.RunDirectoryError(str(error)) from None
        # Again under the lock: another run may have written the directory meanwhile.
        paths = run_directory.prepare_run_directory(config, resume=resume, overwrite=overwrite,
                                                    locked=True)
        return _run(config, experiment, paths, resume=resume, overwrite=overwrite,
                    progress=progress, on_round=on_round)


def _run(config: ExperimentConfig, experiment: Experiment, paths: RunPaths, *, resume: bool,
         overwrite: bool, progress: bool, on_round) -> dict[str, Any]:
    """The body of `run_experiment`, holding the run directory's lock."""
    if overwrite and os.path.isdir(paths.root):
        shutil.rmtree(paths.root)
    os.makedirs(paths.root, exist_ok=True)
    write_json_atomic(paths.config, config.to_dict())

    state_manager = checkpoints.state_manager(paths)
    released = checkpoints.released_rounds(paths) if resume else set()  # (drops an unusable csv)
    csv_manager = tff.program.CSVFileReleaseManager(paths.metrics, key_fieldname="round")
    tensorboard_manager = tff.program.TensorBoardReleaseManager(paths.tensorboard)
    weights_manager = None  # weights.csv, one row per round, one column per client id

    algorithm = experiment.algorithm
    state = algorithm.initialize()
    start_round, wall_before = 0, 0.0
    if resume:
        loaded = checkpoints.load_latest_state(state_manager, algorithm.checkpoint_template(),
                                               released)
        if loaded is not None:
            state, start_round, wall_before = algorithm.restore(loaded)

    summary = collections.OrderedDict(
        run_name=config.run_name, status="running", reason="", rounds_completed=start_round,
        rounds_planned=config.rounds, final_test_accuracy=None, final_test_loss=None,
        best_test_accuracy=None, wall_seconds=wall_before, num_parameters=experiment.num_parameters,
        num_clients=experiment.num_clients, byzantine_ids=experiment.selection.ids,
        actual_byzantine_fraction=experiment.selection.actual_fraction,
        declared_byzantine_fraction=experiment.declared_byzantine_fraction,
        attack_groups={c.name: np.flatnonzero(experiment.selection.groups == g).tolist()
                       for g, c in enumerate(experiment.attack_plan.components)})
    _merge_previous_summary(paths, summary, resume)
    write_json_atomic(paths.summary, summary)

    bar = tqdm.tqdm(total=config.rounds, initial=start_round, desc=config.run_name, unit="round",
                    file=sys.stderr, disable=not progress, dynamic_ncols=True)
    started = time.monotonic()
    saved_round = start_round
    round_num = start_round
    # The newest round whose metrics row is written, and its state: the only state an
    # interrupt may save (a checkpoint never runs ahead of metrics.csv).
    released_round, released_state = start_round, state
    stopped = (stopping.stopped_before(paths, summary, config.stop_test_loss) if resume
               else False)
    last_round = start_round if stopped else config.rounds
    restarts = 0
    try:
        round_index = start_round
        while round_index < last_round:
            processes.raise_if_interrupted()  # a Ctrl-C swallowed in a __del__ (processes.py)
            clients = experiment_lib.sample_clients(
                experiment.num_clients, config.clients_per_round, config.seed, round_index)
            # The worker may die anywhere in a round (its step, a report, fetching client
            # states for a checkpoint): a new worker goes back to the latest checkpoint.
            try:
                t0 = time.monotonic()
                new_state, metrics = _step(algorithm, state, clients, round_index + 1,
                                           config.aggregator)
                round_seconds = time.monotonic() - t0
                state, round_num = new_state, round_index + 1
                weights = algorithm.model_weights(state)
                finite = _is_finite(weights)
                evaluate = finite and (round_num % config.eval_every == 0
                                       or round_num == config.rounds)
                evaluator = experiment.evaluator if evaluate else None
                test_loss, test_accuracy = (evaluator(weights) if evaluate
                                            else (math.nan, math.nan))
                flat = _flatten(metrics)
                report = algorithm.report(state, evaluator)
                flat.update(report.metrics)
                summary.update(report.summary)
                if experiment.backdoor_score is not None:
                    flat.update(experiment.backdoor_score(experiment.evaluator, weights,
                                                          test_accuracy, evaluate))
                if report.client_weights is not None:
                    if weights_manager is None:
                        weights_manager = tff.program.CSVFileReleaseManager(
                            paths.weights, key_fieldname="round")
                    checkpoints.run_sync(weights_manager.release(collections.OrderedDict(
                        zip(experiment.dataset.client_ids, report.client_weights.tolist())),
                        key=round_num))
                row = collections.OrderedDict(
                    test_accuracy=test_accuracy, test_loss=test_loss,
                    train_loss=flat.get("client_work/train_loss", math.nan),
                    round_seconds=round_seconds, clients=len(clients))
                row.update(flat)
                checkpoints.run_sync(csv_manager.release(row, key=round_num))
                released_round, released_state = round_num, state
                checkpoints.run_sync(tensorboard_manager.release(collections.OrderedDict(
                    (k, v) for k, v in row.items() if np.isscalar(v)), key=round_num))
                summary["rounds_completed"] = round_num
                summary["wall_seconds"] = wall_before + time.monotonic() - started
                if evaluate:
                    summary["final_test_accuracy"] = test_accuracy
                    summary["final_test_loss"] = test_loss
                    best = summary["best_test_accuracy"]
                    summary["best_test_accuracy"] = (test_accuracy if best is None
                                                     else max(best, test_accuracy))
                if evaluate and stopping.breaks_loss_limit(test_loss, config.stop_test_loss):
                    stopped = True
                    stopping.mark_stopped(summary, round_num, test_loss, config.stop_test_loss)
                if not finite:
                    raise stopping.NonFiniteModelError(
                        stopping.non_finite_reason(round_num, flat, config.aggregator))
                if (round_num % config.checkpoint_every == 0 or round_num == config.rounds
                        or stopped):
                    with checkpoints.signals_deferred():  # Ctrl-C never half-writes one
                        checkpoints.run_sync(state_manager.save(algorithm.program_state(
                            state, round_num, summary["wall_seconds"]), round_num))
                        saved_round = round_num
            except context_lib.WorkerDiedError as error:
                loaded = _restart_worker(error, restarts, state_manager, algorithm, paths)
                restarts += 1
                summary["worker_restarts"] = restarts
                state, round_index, _ = algorithm.restore(loaded)
                saved_round = round_num = released_round = round_index
                released_state, stopped = state, False
                bar.reset(total=config.rounds)
                bar.update(round_index)
                continue
            write_json_atomic(paths.summary, summary)
            bar.update(1)
            if evaluate:
                bar.set_postfix(acc=f"{test_accuracy:.4f}")
            if on_round is not None:
                on_round(round_num, row)
            if stopped:
                break
            round_index += 1
        processes.raise_if_interrupted()
        summary["status"] = "complete"
    except (stopping.NonFiniteModelError, stopping.RoundFailedError) as error:
        summary["status"], summary["reason"] = "failed", str(error)
    except (KeyboardInterrupt, SystemExit) as interrupt:
        # Client states (kept on the worker or in the store) are the newest round's: save
        # only when that round's row is written, else resume recomputes from `saved_round`.
        if released_round == round_num and released_round > saved_round:
            checkpoints.run_sync(state_manager.save(algorithm.program_state(
                released_state, released_round, summary["wall_seconds"]), released_round))
            saved_round = released_round
        summary["status"] = "running"
        summary["interrupted"] = True
        summary["rounds_completed"] = saved_round
        summary["reason"] = (f"interrupted after round {released_round}, saved round "
                             f"{saved_round} ({type(interrupt).__name__}); continue with "
                             f"--resume")
        processes.clear_interrupts()  # handled: the state is saved and the run stops
        write_json_atomic(paths.summary, summary)
        raise
    except BaseException as error:
        summary["status"], summary["reason"] = "failed", f"{type(error).__name__}: {error}"
        write_json_atomic(paths.summary, summary)
        raise
    finally:
        bar.close()
    summary.pop("interrupted", None)
    write_json_atomic(paths.summary, summary)
    return summary


def _step(algorithm, state, clients, round_num: int, aggregator: str):
    """`algorithm.next`; a robust rule left with too few finite clients fails the round
    (`RoundFailedError`, one line) instead of a worker traceback."""
    try:
        return algorithm.next(state, clients)
    except context_lib.WorkerDiedError:
        raise
    except Exception as error:  # pylint: disable=broad-except  (TFF wraps the rule's error)
        reason = too_few_clients_reason(str(error))
        if reason is None:
            raise
        raise stopping.RoundFailedError(f"round {round_num}: {aggregator}: {reason}") from None


# How often one run replaces a TFF worker that died under it before giving up
# (environment: TFF_BYZ_WORKER_RESTARTS; 0 fails the run at the first death).
WORKER_RESTARTS_ENV = "TFF_BYZ_WORKER_RESTARTS"
_DEFAULT_WORKER_RESTARTS = 3


def _restart_worker(error, restarts: int, state_manager, algorithm, paths: RunPaths):
    """After the local TFF worker died mid-round: a fresh worker and the latest checkpoint.

    The pip worker crashes very rarely (seen once as a SIGSEGV in `pthread_detach` in one of
    its gRPC threads, BUILD_NOTES.md); a long run should not end for it. Re-raises `error`
    when the worker cannot be replaced (remote workers), after the allowed number of
    restarts, or when there is no checkpoint to go back to.
    """
    limit = int(os.environ.get(WORKER_RESTARTS_ENV, _DEFAULT_WORKER_RESTARTS))
    tff_context = context_lib.current()
    if tff_context is None or not tff_context.can_restart or restarts >= limit:
        raise error
    tff_context.restart()
    loaded = checkpoints.load_latest_state(state_manager, algorithm.checkpoint_template(),
                                           checkpoints.released_rounds(paths))
    if loaded is None:
        raise error
    print(f"warning: {error}; started a new TFF worker and went back to the checkpoint of "
          f"round {int(loaded['round'])} (restart {restarts + 1} of at most {limit}; "
          f"{paths.root})", file=sys.stderr)
    return loaded




def _merge_previous_summary(paths: RunPaths, summary: dict, resume: bool) -> None:
    """On resume, recover final/best accuracy from the metrics rows up to the checkpoint."""
    rows = checkpoints.evaluated_rows(paths, summary["rounds_completed"]) if resume else None
    if rows is not None:
        last = rows.iloc[-1]
        summary["final_test_accuracy"] = float(last["test_accuracy"])
        summary["final_test_loss"] = float(last["test_loss"])
        summary["best_test_accuracy"] = float(rows["test_accuracy"].max())
