"""How every `ctrflow` command parses: one-line usage errors, `-v` anywhere, defaults in help.

The command groups build their sub-parsers as they like; `finish(parser)` then walks the tree
once and gives every parser the same behaviour:

- a usage error (unknown option, missing argument, bad choice) is one line on stderr naming the
  command, plus a pointer to `--help`, and exit code 2, never argparse's usage block;
- `-v/--verbose` is accepted after the sub-command too (`ctrflow run -v`), not only before it;
- help shows each option's default, unless it is None or False (nothing to show).

Logging: a command prints its result and nothing else; INFO records reach stderr only with
`-v` (which shows DEBUG too). Commands whose log is their progress (the pipeline's steps as
commands, minutes long, often in a Job) keep INFO: `logs_progress(parser)`.

`UsageError` is the same kind of error found after parsing (a value out of range, an option
missing for an action): `main` reports it the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, NoReturn

EXIT_USAGE = 2
#: The namespace attribute holding a command's log level without -v (default WARNING).
LOG_LEVEL = "log_level"


def logs_progress(parser: argparse.ArgumentParser) -> None:
    """Log at INFO without -v: the command's log is its progress."""
    parser.set_defaults(**{LOG_LEVEL: logging.INFO})


class UsageError(ValueError):
    """A bad command line found after parsing; reported as one line, exit code 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when it has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = getattr(action, _SHOWN, None)
        if shown is not None and "default:" not in text:
            value = shown() if callable(shown) else shown
            value = "none" if value in ("", None) else value
            return f"{text} (default: {value})".replace("%", "%%")
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
            or action.help == argparse.SUPPRESS
        ):
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


_SHOWN = "ctrflow_shown_default"


def shown_default(action: argparse.Action, value: Any) -> None:
    """Show `value` (or what the callable `value` returns, asked only when help is printed) as
    the default of an option whose real default is None (meaning: not given)."""
    setattr(action, _SHOWN, value)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_USAGE)


def _children(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [
        child
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for child in dict.fromkeys(action.choices.values())  # aliases map to the same parser
    ]


def finish(parser: argparse.ArgumentParser) -> None:
    """Give `parser` and every sub-parser below it the behaviour described above."""
    for child in _children(parser):
        child.formatter_class = HelpFormatter
        has_verbose = any("-v" in a.option_strings for a in child._actions)
        if not _children(child) and not has_verbose:
            # SUPPRESS: absent after the sub-command, it leaves the top-level flag's value alone.
            child.add_argument(
                "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE
            )
        finish(child)


_VERBOSE = "debug logging; for `run`, stream every step's output"


def report(command: str, exc: Exception | str) -> int:
    """Print a usage error as one line; returns the exit code."""
    print(f"ctrflow {command}: {exc}", file=sys.stderr)
    return EXIT_USAGE


def command_name(args: Any) -> str:
    """ "run", "schedule apply", ...: the words of the sub-command that was parsed."""
    words = [getattr(args, "command", None)]
    for key, value in vars(args).items():
        if key.endswith("_command") and isinstance(value, str):
            words.append(value)
    return " ".join(w for w in words if w)
