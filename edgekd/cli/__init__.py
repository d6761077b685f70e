"""The `edgekd` command: a thin Typer layer over the public API. It parses options, renders results
and owns the exit codes; the logic lives in the library.

This module is the entry point and the table of commands. Each command group is a module with the
renderers it needs: `fit`, `export`, `catalog` (targets, models, search), `latency`, and `devices`
(profile, devices); the options they share are in `options`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from edgekd import __version__
from edgekd.cli import catalog, devices, export, fit, latency, predict
from edgekd.errors import EdgeKDError

__all__ = ["app", "main", "run"]

app = typer.Typer(
    help="Distil a large vision model into a small one that fits a real edge device.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# The table of commands, in the order `edgekd --help` lists them (commands first, then groups).
app.command()(fit.fit)
app.command("export")(export.export_command)
app.command("predict")(predict.predict_command)
app.command("search")(catalog.search_command)
app.command("profile")(devices.profile_command)
app.add_typer(catalog.targets_app, name="targets")
app.add_typer(catalog.models_app, name="models")
app.add_typer(latency.latency_app, name="latency")
app.add_typer(devices.devices_app, name="devices")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgekd {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    from edgekd._console import setup_logging

    setup_logging(debug)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and return its exit code. Every failure is one line on stderr
    (`--debug` adds the traceback), except a bug, which shows its traceback and asks for a report.

    Exit codes: 0 done; 1 the machine failed (a full disk, a read-only or unwritable path) or edgekd
    has a bug; 2 the input or the options are wrong; 130 interrupted (Ctrl-C).
    """
    from edgekd import _console
    from edgekd._interrupts import deliver_dropped_interrupts

    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = False
    _console.activity = None
    try:
        with deliver_dropped_interrupts():
            code = command.main(args=args, prog_name="edgekd", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 1
    except typer.TyperException as e:  # usage errors: bad option values, unknown options
        e.show()
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:  # before or after the command's own code, where Typer does not see it
        return _interrupted(command, args)
    except EdgeKDError as e:
        return _failed(str(e), e.exit_code)
    except OSError as e:
        from edgekd._io import describe_os_error

        return _failed(describe_os_error(e), 1)
    except Exception as e:
        if _caused_by_interrupt(e):
            return _interrupted(command, args)
        import traceback

        traceback.print_exc()
        typer.secho(
            "error: this is a bug in edgekd; please report it with the traceback above and the command.",
            err=True,
            fg="red",
        )
        return 1
    if code == 130:  # Typer turns a KeyboardInterrupt in a command into this exit code
        return _interrupted(command, args)
    return code if isinstance(code, int) else 0


def _caused_by_interrupt(error: BaseException) -> bool:
    """Whether a Ctrl-C lies in `error`'s chain: Python 3.11 wraps one that lands while a class body
    is being built (during an import, e.g. timm's) into "RuntimeError: Error calling __set_name__"."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _failed(message: str, code: int) -> int:
    if _state["debug"] and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc()
    typer.secho(f"error: {message}", err=True, fg="red")
    return code


def _interrupted(command, args: list[str]) -> int:
    """Report a Ctrl-C that reached no `Interrupted` error: name the command and what it last drew."""
    from edgekd import _console

    words, group = ["edgekd"], command
    for arg in args:
        if arg.startswith("-"):
            continue
        sub = getattr(group, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        group = sub
    doing = " ".join(words) + (f" ({_console.activity})" if _console.activity else "")
    return _failed(f"interrupted during {doing}", 130)


def run() -> None:
    """The console script."""
    sys.exit(main())
