"""The `adaptrec` command: one module per command group, each command parses, calls one `adaptrec.api` function
and prints. User errors: one `error:` line each, exit 2."""

from __future__ import annotations

import sys
import warnings

import typer

from ..errors import command_line, one_line_errors
from . import cache, evaluate, hub, online, plot, registry, router, serve, train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Per-domain adapters on one frozen 8-bit LLM for recommendation.")
for group in (train, online, evaluate, registry, router, hub, serve, plot, cache):
    group.register(app)


def main() -> None:
    with warnings.catch_warnings():  # restored after: a caller's (or a test's) own warning display stays theirs
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            """adaptrec's own warnings as one `warning:` line on stderr (Python's format adds the source file and
            line); other packages' as they show them."""
            if category.__module__.split(".")[0] == "adaptrec":
                typer.echo(f"warning: {message}", err=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        _run()


def _run() -> None:
    with one_line_errors():  # an AdaptrecError or a file system refusal (a home under a file, a full disk): one line
        try:
            with command_line():  # errors name flags, not keywords
                code = app(prog_name="adaptrec", standalone_mode=False)  # usage errors come back: one line
        except typer.TyperException as e:  # click's usage errors: an unknown option or command, a value out of range
            message, ctx = e.format_message().strip(), getattr(e, "ctx", None)
            if "\n" in message:  # a group called bare: its help (unless rich printed it already, leaving no message)
                typer.echo(message, err=True)
            elif message:
                path = ctx.command_path if ctx is not None else _command_path(sys.argv[1:])
                typer.echo(f"error: {message} (see `{path} --help`)", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:  # end of input at a prompt
            typer.echo("Aborted!", err=True)
            sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)  # a command's `typer.Exit(N)`, `--help`: their exit code


def _command_path(args: list[str]) -> str:
    """The command a command line names (`adaptrec registry promote`), read from its words: click gives no context
    with some usage errors (an option missing its value)."""
    import typer.main

    command, path = typer.main.get_command(app), ["adaptrec"]
    for word in args:
        sub = getattr(command, "commands", {}).get(word) if not word.startswith("-") else None
        if sub is None:
            break
        command = sub
        path.append(word)
    return " ".join(path)
