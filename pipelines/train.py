"""Runs one experiment: `python -m pipelines.train --dataset=digits --aggregator=mean ...`.

Thin: parse flags → validated `ExperimentConfig` → `orchestration.training.run_experiment`
inside a managed TFF execution context → print a short summary. Exit codes:
0 complete, 1 failed (e.g. the model became non-finite), 2 invalid flags or run
directory (one line on stderr, nothing written), 130/143 interrupted by
SIGINT/SIGTERM (state saved; continue with --resume).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: hide CUDA-probe noise

import sys  # noqa: E402

from absl import flags  # noqa: E402

from tff_byz import processes  # noqa: E402  (no TensorFlow)

flags.DEFINE_string("dataset", "digits", "digits (embedded, no files), mnist, fashion_mnist, "
                    "emnist, cifar10, olivetti, synthetic.")
flags.DEFINE_string("data_dir", None, "Directory holding real datasets (e.g. ../shared/data).")
flags.DEFINE_string("partition", "iid", "iid, q (label groups), dirichlet, natural (emnist writers).")
flags.DEFINE_float("q", 0.5, "q-split: probability an example goes to its label's group.")
flags.DEFINE_string("q_mode", "sample", "q-split mode: sample (paper) or exact (authors' code).")
flags.DEFINE_float("alpha", 0.5, "Dirichlet concentration for --partition=dirichlet.")
flags.DEFINE_integer("num_clients", 20, "Number of clients (writers to keep for emnist; 0 = all).")
flags.DEFINE_integer("clients_per_round", 0, "Clients sampled per round (0 = all).")
flags.DEFINE_string("model", None, "mlp, small_mlp, wide_mlp, emnist_cnn, lenet, cifar_cnn "
                    "(default: per dataset).")
flags.DEFINE_string("aggregator", "mean", "NAME[:key=value,...]; see --list_aggregators.")
flags.DEFINE_string("attack", "none", "NAME[:key=value,...]; see --list_attacks.")
flags.DEFINE_float("byzantine_fraction", 0.0, "Fraction of Byzantine clients (random and "
                   "label_groups selection).")
flags.DEFINE_string("byzantine_selection", "random", "Who is Byzantine: random, label_groups "
                    "(whole label groups of --partition=q) or ids:3,17,...")
flags.DEFINE_float("declared_byzantine_fraction", None, "Fraction declared to defences "
                   "(default: the actual fraction of Byzantine clients).")
flags.DEFINE_integer("rounds", 30, "Number of rounds.")
flags.DEFINE_integer("local_epochs", 1, "Local epochs per round (local_sgd).")
flags.DEFINE_integer("local_steps", 0, "Local SGD steps per round on each client's example "
                     "stream instead of --local_epochs (0 = epochs); PDMM's K by default.")
flags.DEFINE_integer("batch_size", 32, "Client mini-batch size.")
flags.DEFINE_float("client_lr", 0.1, "Client SGD learning rate (local_sgd).")
flags.DEFINE_string("client_work", "local_sgd", "local_sgd (FedAvg) or momentum_sgd.")
flags.DEFINE_float("momentum", 0.9, "Client momentum β (momentum_sgd).")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay (momentum_sgd).")
flags.DEFINE_float("server_lr", 1.0, "Server learning rate: θ ← θ + server_lr · Agg(Δ).")
flags.DEFINE_integer("eval_every", 1, "Evaluate on the test set every k rounds (and at the end).")
flags.DEFINE_integer("checkpoint_every", 0, "Save program state every k rounds (0 = eval_every).")
flags.DEFINE_float("stop_test_loss", None, "End the run at the first evaluation whose test loss "
                   "exceeds this or is NaN (the FedLAW authors' code stops at 9).")
flags.DEFINE_string("topology", "star", "PDMM: star (centralized, server as a PDMM node), "
                    "ring, complete or rgg (decentralized).")
flags.DEFINE_string("attack_message", "delta", "FedAvg: local attacks corrupt the delta or the "
                    "uploaded model (model-sized message, as PDMM's y).")
flags.DEFINE_integer("seed", 0, "Run seed: data split, initial model, sampling, shuffles.")
flags.DEFINE_string("output_dir", "runs", "Parent directory of run directories.")
flags.DEFINE_string("run_name", None, "Run directory name (default: derived from the settings).")
flags.DEFINE_bool("resume", False, "Continue the run in --output_dir/--run_name from its state.")
flags.DEFINE_bool("overwrite", False, "Replace an existing run directory.")
flags.DEFINE_string("tff_workers", "", "Remote TFF workers host:port,... (default: a local worker).")
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
flags.DEFINE_string("baseline", None, "Also run the same settings with this --aggregator "
                    "(e.g. mean) and print both results side by side.")
flags.DEFINE_bool("list_aggregators", False, "Print every aggregator with its parameters and exit.")
flags.DEFINE_bool("list_attacks", False, "Print every attack with its parameters and exit.")

FLAGS = flags.FLAGS

_CONFIG_FLAGS = ("dataset", "data_dir", "partition", "q", "q_mode", "alpha", "num_clients",
                 "clients_per_round", "model", "aggregator", "attack", "byzantine_fraction",
                 "byzantine_selection", "declared_byzantine_fraction",
                 "rounds", "local_epochs", "local_steps", "batch_size", "client_lr", "client_work",
                 "momentum", "weight_decay", "server_lr", "eval_every", "checkpoint_every",
                 "stop_test_loss", "seed",
                 "topology", "attack_message", "output_dir", "run_name", "tff_workers")


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


_HELP = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort")
_HELP_FULL = ("--helpfull", "-helpfull")


def _help_text(full: bool) -> str:
    """This program's usage and flags (`full`: also absl's own flags)."""
    if full:
        flag_help = FLAGS.get_help()
    elif __name__ == "__main__":  # `python -m`: absl files the flags under the script's path
        flag_help = FLAGS.main_module_help()
    else:
        flag_help = FLAGS.module_help(sys.modules[__name__])
    return f"{__doc__.strip()}\n\nflags:\n{flag_help}\n"


def main(argv=None) -> int:
    # Every Ctrl-C ends the run with 130, even one Python swallows in a __del__ (processes.py).
    with processes.noticing_interrupts():
        try:
            return _main(argv)
        except KeyboardInterrupt:  # during start-up (the run's own handler saves its state)
            print("\ninterrupted before the run started; nothing was written", file=sys.stderr)
            return 130


def _main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    # main() parses the flags itself (BUILD_NOTES: import order), so absl's app.run does not
    # define its help flags: answer them here, before anything is parsed or imported.
    if any(arg in _HELP + _HELP_FULL for arg in argv[1:]):
        print(_help_text(full=any(arg in _HELP_FULL for arg in argv[1:])), end="")
        return 0
    FLAGS.unparse_flags()  # main() may be called repeatedly in one process (tests)
    try:
        remaining = FLAGS(argv)
    except flags.Error as error:
        return _error(str(error).splitlines()[0])
    if len(remaining) > 1:
        return _error(f"unexpected positional arguments {remaining[1:]}; all settings are --flags.")

    from algorithms import AGGREGATOR_CHOICES  # pylint: disable=import-outside-toplevel
    from attacks import ATTACKS  # pylint: disable=import-outside-toplevel
    if FLAGS.list_aggregators or FLAGS.list_attacks:
        if FLAGS.list_aggregators:
            print(AGGREGATOR_CHOICES.describe())
        if FLAGS.list_attacks:
            print(ATTACKS.describe())
        return 0

    from tff_byz import context  # pylint: disable=import-outside-toplevel
    from orchestration import run_directory, training  # pylint: disable=import-outside-toplevel
    from orchestration.config import ConfigError, ExperimentConfig  # pylint: disable=import-outside-toplevel

    config = ExperimentConfig(**{name: getattr(FLAGS, name) for name in _CONFIG_FLAGS})
    try:
        resolved = config.resolved()
        runs = [resolved]
        if FLAGS.baseline is not None:
            runs.append(baseline_config(resolved, FLAGS.baseline))
        for run in runs:
            run_directory.prepare_run_directory(run, resume=FLAGS.resume, overwrite=FLAGS.overwrite)
        workers = context.parse_worker_addresses(resolved.tff_workers) if resolved.tff_workers else ()
    except (ConfigError, ValueError) as error:
        return _error(str(error))

    summaries = []
    try:
        with context.managed_execution_context(
                workers, log_path=os.environ.get("TFF_BYZ_WORKER_LOG")):
            for run in runs:
                summaries.append(training.run_experiment(
                    run, resume=FLAGS.resume, overwrite=FLAGS.overwrite, progress=FLAGS.progress))
            processes.raise_if_interrupted()
    except ConfigError as error:  # includes missing dataset files; nothing was written
        return _error(str(error))
    except context.WorkerDiedError as error:  # the run's summary says "failed" with this reason
        print(f"error: {error}; checkpoints are kept: rerun with --resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: {_saved(runs[len(summaries)])}", file=sys.stderr)
        return 130
    except SystemExit as exit_request:
        print(f"\nterminated: {_saved(runs[len(summaries)])}", file=sys.stderr)
        return exit_request.code if isinstance(exit_request.code, int) else 143

    code = 0
    for run, summary in zip(runs, summaries):
        run_dir = os.path.join(run.output_dir, run.run_name)
        accuracy = summary["final_test_accuracy"]
        print(f"{summary['status']}: {run.run_name}: {summary['rounds_completed']}/"
              f"{run.rounds} rounds, final test accuracy "
              f"{'n/a' if accuracy is None else f'{accuracy:.4f}'}, "
              f"{summary['wall_seconds']:.1f} s ({run_dir})")
        honest_mean = summary.get("final_test_accuracy_honest_mean")
        if honest_mean is not None:
            print(f"  honest clients' mean model (PDMM): final test accuracy {honest_mean:.4f}")
        if summary["status"] != "complete":
            print(f"reason: {summary['reason']}", file=sys.stderr)
            code = 1
    if len(runs) > 1:
        print(side_by_side(runs, summaries))
    return code


def _saved(run) -> str:
    """What an interrupted run kept, from its summary.json."""
    import json  # pylint: disable=import-outside-toplevel
    try:
        with open(os.path.join(run.output_dir, run.run_name, "summary.json")) as f:
            saved = int(json.load(f).get("rounds_completed") or 0)
    except (OSError, ValueError):
        saved = 0
    if saved:
        return f"state saved at round {saved}; continue with --resume (run {run.run_name})"
    return f"no round was saved yet (run {run.run_name}); rerun to start it"


def baseline_config(config, aggregator: str):
    """The same run settings with another aggregator (centralized), in its own run directory."""
    import dataclasses  # pylint: disable=import-outside-toplevel
    from algorithms import AGGREGATOR_CHOICES  # pylint: disable=import-outside-toplevel
    from pdmm.process import DEFAULT_LOCAL_STEPS  # pylint: disable=import-outside-toplevel
    local_steps = config.local_steps
    main = AGGREGATOR_CHOICES.resolve(config.aggregator)[0]
    if main.name == "pdmm" and not local_steps:  # FedAvg takes PDMM's K local steps too
        local_steps = main.params.get("local_steps") or DEFAULT_LOCAL_STEPS
    baseline = dataclasses.replace(config, aggregator=aggregator, topology="star",
                                   local_steps=local_steps, run_name=None)
    if FLAGS.run_name is not None:
        baseline.run_name = f"{FLAGS.run_name}_baseline"
    baseline = baseline.resolved()
    if baseline.run_name == config.run_name:
        from orchestration.config import ConfigError  # pylint: disable=import-outside-toplevel
        raise ConfigError(f"--baseline={aggregator!r} is the run's own --aggregator.")
    return baseline


def side_by_side(runs, summaries) -> str:
    """A small table of the runs' final accuracies (same settings, different aggregators)."""
    def cell(value):
        return "n/a" if value is None else f"{value:.4f}"

    first = runs[0]
    width = max(len("aggregator"), *(len(run.aggregator) for run in runs))
    lines = [f"\nsame settings ({first.dataset}, {first.num_clients} clients, attack "
             f"{first.attack}, byzantine fraction {first.byzantine_fraction:g}, "
             f"{first.rounds} rounds, seed {first.seed}):",
             f"  {'aggregator':<{width}} {'final acc':>9} {'best acc':>9} {'honest-mean acc':>15}"]
    for run, summary in zip(runs, summaries):
        lines.append(f"  {run.aggregator:<{width}} {cell(summary['final_test_accuracy']):>9} "
                     f"{cell(summary['best_test_accuracy']):>9} "
                     f"{cell(summary.get('final_test_accuracy_honest_mean')):>15}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
