"""Command-line pieces shared by the four packages: numeric option types that refuse NaN, ±inf and out-of-range
values with the option named, and a parser whose errors are one line (exit status 2) like every other refusal."""

from __future__ import annotations

import argparse
import math
import re
import sys


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error: ...`` line naming the fix (``--help``)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        print(f"error: {self.prog}: {message}{_choice_hint(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _choice_hint(message: str) -> str:
    """`` (did you mean 'x'?)`` for argparse's "invalid choice: 'y' (choose from ...)" (an unknown verb or choice)."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return ""
    from .fields import suggest

    # quoted ('a', 'b') on most Pythons, bare (a, b) on some 3.12/3.13 releases
    choices = [c.strip().strip("'") for c in found.group(2).split(",")]
    return suggest(found.group(1), [c for c in choices if c])


class VersionAction(argparse.Action):
    """``--version``: print :func:`simulations.__main__.version_text` (the code and numerics versions; the same line
    for every package) and exit 0. Computed only when asked (it runs ``git describe``)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the code version and the numerics version, then exit"):  # noqa: A002 - argparse's name
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from .__main__ import version_text

        print(version_text())
        parser.exit()


def _number(kind, low, low_inclusive, what):
    def parse(text: str):
        try:
            value = float(text) if kind is float else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a number' if kind is float else 'an integer'}") \
                from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
        if value < low or (value == low and not low_inclusive):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, True, "a positive integer")
non_negative_int = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0.0, False, "a positive number")
non_negative_float = _number(float, 0.0, True, "a number >= 0")


def fraction_open(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _number(float, 0.0, False, "a number in (0, 1)")(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number in (0, 1)")
    return value
