"""Runs one experiment: `python -m pipelines.train --dataset=digits --aggregator=mean ...`.

Thin: parse flags → validated `ExperimentConfig` → `orchestration.training.run_experiment`
inside a managed TFF execution context → print a short summary. Exit codes:
0 complete, 1 failed (e.g. the model became non-finite), 2 invalid flags or run
directory (one line on stderr, nothing written), 130/143 interrupted by
SIGINT/SIGTERM (state saved; continue with --resume).
"""

from __future__ import annotations

import dataclasses
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: hide CUDA-probe noise

import sys  # noqa: E402

from algorithms import AGGREGATOR_CHOICES  # noqa: E402  (no TensorFlow)
from attacks import ATTACKS  # noqa: E402  (no TensorFlow)
from orchestration.config import ConfigError, ExperimentConfig  # noqa: E402  (no TensorFlow)
from pdmm import DEFAULT_LOCAL_STEPS  # noqa: E402  (no TensorFlow)
from pipelines import cli  # noqa: E402  (no TensorFlow)
from tff_byz import processes  # noqa: E402  (no TensorFlow)


def _parser() -> tuple[cli.Parser, list[str]]:
    """The flags: one per `ExperimentConfig` field, then the run's own; and the field names."""
    parser = cli.Parser("python -m pipelines.train")
    names = cli.add_dataclass_flags(parser, ExperimentConfig)
    parser.add_argument("--baseline", default=None, help="Also run the same settings with this "
                        "--aggregator (e.g. mean) and print both results side by side.")
    cli.add_switch(parser, "resume", False, "Continue the run in --output_dir/--run_name from "
                   "its state.")
    cli.add_switch(parser, "overwrite", False, "Replace an existing run directory.")
    cli.add_switch(parser, "progress", True, "Show a progress bar on stderr.")
    cli.add_switch(parser, "list_aggregators", False, "Print every aggregator with its "
                   "parameters and exit.")
    cli.add_switch(parser, "list_attacks", False, "Print every attack with its parameters and "
                   "exit.")
    return parser, names


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
    parser, config_names = _parser()
    flags, code = cli.parse_command_line(parser, argv[1:], __doc__)
    if flags is None:
        return code

    if flags.list_aggregators or flags.list_attacks:
        if flags.list_aggregators:
            print(AGGREGATOR_CHOICES.describe())
        if flags.list_attacks:
            print(ATTACKS.describe())
        return 0

    config = ExperimentConfig(**{name: getattr(flags, name) for name in config_names})
    try:
        resolved = config.resolved()  # every flag checked, without TensorFlow
    except (ConfigError, ValueError) as error:
        return cli.error(str(error))

    # Start-up time: --help, --list_* and every flag error above answer without importing
    # TensorFlow (~5 s).
    # pylint: disable=import-outside-toplevel
    from orchestration import run_directory, training
    from tff_byz import context
    # pylint: enable=import-outside-toplevel
    try:
        runs = [resolved]
        if flags.baseline is not None:
            runs.append(baseline_config(resolved, flags.baseline, flags.run_name))
        for run in runs:
            run_directory.prepare_run_directory(run, resume=flags.resume, overwrite=flags.overwrite)
        workers = context.parse_worker_addresses(resolved.tff_workers) if resolved.tff_workers else ()
    except (ConfigError, ValueError) as error:
        return cli.error(str(error))

    summaries = []
    try:
        with context.managed_execution_context(
                workers, log_path=os.environ.get("TFF_BYZ_WORKER_LOG")):
            for run in runs:
                summaries.append(training.run_experiment(
                    run, resume=flags.resume, overwrite=flags.overwrite, progress=flags.progress))
            processes.raise_if_interrupted()
    except ConfigError as error:  # includes missing dataset files; nothing was written
        return cli.error(str(error))
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
        node_mean = summary.get("final_test_accuracy_node_mean")
        if node_mean is not None:
            print(f"  honest clients' own models: final test accuracy {node_mean:.4f} (mean), "
                  f"{summary['final_test_accuracy_node_min']:.4f} (worst)")
        if summary["status"] != "complete":
            print(f"reason: {summary['reason']}", file=sys.stderr)
            code = 1
    if len(runs) > 1:
        print(side_by_side(runs, summaries))
    return code


def _saved(run) -> str:
    """What an interrupted run kept, from its summary.json."""
    try:
        with open(os.path.join(run.output_dir, run.run_name, "summary.json")) as f:
            saved = int(json.load(f).get("rounds_completed") or 0)
    except (OSError, ValueError):
        saved = 0
    if saved:
        return f"state saved at round {saved}; continue with --resume (run {run.run_name})"
    return f"no round was saved yet (run {run.run_name}); rerun to start it"


def baseline_config(config, aggregator: str, run_name=None):
    """The same run settings with another aggregator (centralized), in its own run directory
    (`run_name`: the run's --run_name, if given)."""
    local_steps = config.local_steps
    main = AGGREGATOR_CHOICES.resolve(config.aggregator)[0]
    if main.name == "pdmm" and not local_steps:  # FedAvg takes PDMM's K local steps too
        local_steps = main.params.get("local_steps") or DEFAULT_LOCAL_STEPS
    baseline = dataclasses.replace(config, aggregator=aggregator, topology="star",
                                   local_steps=local_steps, run_name=None)
    if run_name is not None:
        baseline.run_name = f"{run_name}_baseline"
    baseline = baseline.resolved()
    if baseline.run_name == config.run_name:
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
