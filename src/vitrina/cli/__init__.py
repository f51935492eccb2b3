"""The command line: parse, call the library, print. Results go to stdout, progress to stderr.

Exit codes: 0 success; 1 an error (message on stderr); 2 bad usage; 3 indexing finished but some
items failed (listed in the summary and in `vitrina info`); 75 (EX_TEMPFAIL) a server asked us to
stop (429) or the disk is full: run again later, it resumes; 130 interrupted (resumable).

The group lives here; the commands live in one module per kind of work, each listing what it
adds in ``COMMANDS``, and ``COMMAND_MODULES`` says which modules are read (the shape of
huggingface_hub's and datasette's command lines). A new command goes into the module of its kind
(or a new one, added to ``COMMAND_MODULES``); what they share (consoles, errors, progress bars,
report printing) is in ``_common``. The command modules import the library inside each command,
so that ``vitrina --help`` stays quick.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__
from ._common import CONTEXT

__all__ = ["cli", "main"]

# Modules whose COMMANDS are added to the group, in this order (help lists commands by name).
COMMAND_MODULES = ("indexing", "describing", "searching", "analysis", "evaluation", "transfer", "ocr", "curating")


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="vitrina")
def cli() -> None:
    """Search digitised heritage image collections by what they show.

    Collections live in $VITRINA_HOME (default ~/.local/share/vitrina); a COLLECTION argument
    is a name there, or a path."""


def _register(group: click.Group) -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        for command in module.COMMANDS:
            group.add_command(command)


_register(cli)


def main() -> None:
    cli(prog_name="vitrina")
