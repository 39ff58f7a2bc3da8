"""The ``tokgen`` command line.

Subcommands are thin: they parse arguments, call one function of the package and print
the result (JSON on stdout where asked; progress and logs on stderr). Logging is set up
once, here, before the command runs (``--log-level``, ``--log-format`` on every command;
``tokgen.logs``). A ``TokgenError`` becomes one line on stderr and exit status 2, or the
status of a server's answer; every status is in ``exits``.

One module per command group, each with its ``cmd_*`` functions and a ``register`` that
adds its subcommands: ``data``, ``codec`` (encode, decode, codec), ``prior``,
``generate``, ``eval``, ``serve`` (serve, worker, health), ``client`` (client, jobs) and
``bench``; ``common`` holds what they share.
"""

from __future__ import annotations

import argparse

from tokgen import __version__
from tokgen.cli import bench, client, codec, common, data, eval, generate, prior, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokgen", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tokgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (data, codec, prior, generate, eval, serve, client, bench):
        group.register(sub)
    for each in _all_parsers(parser):
        common.add_logging_options(each)
    return parser


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every (sub)command parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # an alias shares its parser
                found += _all_parsers(child)
    return found


def main(argv: list[str] | None = None) -> int:
    return common.run(build_parser().parse_args(argv))
