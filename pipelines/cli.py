"""What the three command lines share: flags that fail in one line, help, exit codes.

`--name=value` and `--name value` both work; a switch takes `--name`, `--noname` or
`--name=true|false`. A bad flag raises `UsageError` (the entry point prints it with
`error`, exit 2); `-h`, `--help`, `--helpshort` and `--helpfull` print the program's
help and exit 0, whatever else is on the line. Importing this module imports no
TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence

__all__ = ["UsageError", "Parser", "parse_command_line", "error", "wants_help", "parse_bool", "integer", "number",
           "add_switch", "add_dataclass_flags", "raise_system_exit"]

HELP_FLAGS = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort", "--helpfull",
              "-helpfull")


class UsageError(ValueError):
    """A bad command line (exit 2)."""


class Parser(argparse.ArgumentParser):
    """An `argparse` parser that raises `UsageError` instead of exiting, and knows no
    abbreviations (a misspelt flag is an error, not another flag)."""

    def __init__(self, prog: str, usage: str = "[--flag=value ...]"):
        super().__init__(prog=prog, usage=f"{prog} {usage}", add_help=False, allow_abbrev=False,
                         formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str):
        raise UsageError(message.replace("argument ", "", 1))

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        """The flags of `argv` (without the program name)."""
        args, rest = self.parse_known_args(list(argv))
        unknown = [a for a in rest if a.startswith("-")]
        if unknown:
            valid = ", ".join(sorted(a.option_strings[0] for a in self._actions
                                     if a.option_strings and a.help != argparse.SUPPRESS))
            raise UsageError(f"unknown flag {unknown[0].split('=')[0]}; valid flags: {valid}")
        if rest:
            raise UsageError(f"unexpected positional arguments {rest}")
        return args

    def help_text(self, doc: str) -> str:
        """`doc` (the program's module docstring), then every flag."""
        return f"{doc.strip()}\n\n{self.format_help()}"


def parse_command_line(parser: Parser, argv: Sequence[str], doc: str):
    """`(flags, None)`, or `(None, exit code)` once help (0) or a one-line error (2) is printed.

    `argv` without the program name; `doc` is the program's module docstring, printed
    above the flags by `--help` (which wins over anything else on the line)."""
    if wants_help(argv):
        print(parser.help_text(doc), end="")
        return None, 0
    try:
        return parser.parse(argv), None
    except UsageError as bad:
        return None, error(str(bad))


def error(message: str) -> int:
    """Prints `error: message` on stderr; returns exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")


def add_switch(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:  # pylint: disable=redefined-builtin
    """`--name`, `--name=true|false` and `--noname`."""
    parser.add_argument(f"--{name}", nargs="?", const=True, default=default, type=parse_bool,
                        metavar="BOOL", help=f"{help} (--no{name}: off; default "
                                             f"{'on' if default else 'off'})")
    parser.add_argument(f"--no{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def integer(text: str) -> int:
    """An `argparse` type: an int, or the error `expected an integer; got 'x'`."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None


def number(text: str) -> float:
    """An `argparse` type: a float, or the error `expected a number; got 'x'`."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None


def add_dataclass_flags(parser: argparse.ArgumentParser, cls) -> list[str]:
    """One flag per field of the dataclass `cls`: its name, default and type (int, float,
    str, bool, or Optional of one), its help from the field's `metadata["help"]`. Returns
    the field names, in order."""
    hints = typing.get_type_hints(cls)
    names = []
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
        help_text = field.metadata.get("help", "")
        if kind is bool:
            add_switch(parser, field.name, field.default, help_text)
        else:
            convert = {int: integer, float: number}.get(kind, kind)
            shown = "" if field.default is None else f" (default {field.default})"
            parser.add_argument(f"--{field.name}", type=convert, default=field.default,
                                metavar=kind.__name__.upper(), help=help_text + shown)
        names.append(field.name)
    return names


def raise_system_exit(signum, frame):  # pylint: disable=unused-argument
    """A SIGTERM/SIGHUP handler: unwinds like Ctrl-C, exit code 128 + signal."""
    raise SystemExit(128 + signum)
