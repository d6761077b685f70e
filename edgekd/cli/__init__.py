"""The `edgekd` command: a thin Typer layer over the public API. It parses options, renders results
and owns the exit codes; the logic lives in the library.

This module is the entry point and the table of commands. Each command group is a module with the
renderers it needs: `fit`, `export`, `report`, `catalog` (targets, models, search), `latency`, and `devices`
(profile, devices); the options they share are in `options`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from edgekd import __version__
from edgekd.cli import catalog, devices, export, fit, latency, predict, report
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
app.command("report")(report.report_command)
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
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show tracebacks, debug logs, and the converters' and runtimes' own messages (otherwise "
            "only in the command's log file).",
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    from edgekd import _console
    from edgekd._capture import captured_output

    _console.setup_logging(debug)
    # Other libraries' output goes to a log file until the command returns or raises; its error
    # is printed after that, on the terminal (click closes the context's resources first).
    ctx.with_resource(
        captured_output(ctx.invoked_subcommand or "edgekd", debug=debug, terminal_console=_console.console)
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and return its exit code. Every failure is one line on stderr
    (`--debug` adds the traceback), except a bug, which shows its traceback and asks for a report.

    Exit codes: 0 done; 1 the machine failed (a full disk, a read-only or unwritable path) or edgekd
    has a bug; 2 the input or the options are wrong; 130 interrupted (Ctrl-C).
    """
    from edgekd import _capture, _console
    from edgekd._interrupts import deliver_dropped_interrupts, imports_uninterrupted

    command = _without_flag_types(typer.main.get_command(app))
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = False
    _console.activity = None
    _capture.forget_last_log()
    try:
        with deliver_dropped_interrupts(), imports_uninterrupted():
            code = command.main(args=args, prog_name="edgekd", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 1
    except typer.TyperException as e:  # usage errors: bad option values, unknown options
        _suggest_the_option_meant(e)
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
        _name_the_log()
        return 1
    if code == 130:  # Typer turns a KeyboardInterrupt in a command into this exit code
        return _interrupted(command, args)
    return code if isinstance(code, int) else 0


# Option names users reach for that edgekd spells otherwise, with the option each means: suggested for
# an unknown option when the command has it. Click's own guess goes by spelling (`fit --out` got
# "Possible options: --cutmix").
MEANT = {
    "--out": "--runs-dir",
    "--output": "--runs-dir",
    "--output-dir": "--runs-dir",
    "--outdir": "--runs-dir",
    "-o": "--runs-dir",
    "--model": "--student",
    "--dataset": "--data",
    "--data-dir": "--data",
}


def _suggest_the_option_meant(error) -> None:
    """An unknown option that `MEANT` knows suggests the one meant, where the command has it."""
    name, ctx = getattr(error, "option_name", None), getattr(error, "ctx", None)
    meant = MEANT.get((name or "").split("=")[0])
    if meant is not None and ctx is not None and any(meant in p.opts for p in ctx.command.params):
        error.possibilities = [meant]


def _without_flag_types(command):
    """The command tree with its flags (--help, --all, --hflip/--no-hflip) shown without a value type:
    Typer would print `<bool>` beside each, a Python type that takes no value."""
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    help_option = command.get_help_option

    def untyped_help_option(ctx):
        option = help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = untyped_help_option
    for sub in getattr(command, "commands", {}).values():
        _without_flag_types(sub)
    return command


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
    _name_the_log()
    return code


def _name_the_log() -> None:
    """A failed command whose libraries printed something says where: their lines went to its log."""
    from edgekd._capture import last_log_with_library_output

    log = last_log_with_library_output()
    if log is not None:
        typer.secho(f"the libraries' own messages are in {log}", err=True, dim=True)


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
    code = main()
    if code == 130:
        _exit_interrupted()
    sys.exit(code)


def _exit_interrupted() -> None:
    """Exit with 130 even where CPython would die by SIGINT instead. A Ctrl-C that lands while a C
    extension runs Python code through PyRun_String (pybind11 modules do, while they are imported)
    sets CPython's "unhandled KeyboardInterrupt" flag, though edgekd caught the interrupt; after
    finalisation that flag overrides sys.exit's code. The atexit handlers still run (the logs are
    flushed and closed there); what is skipped is the wait for non-daemon threads, which an
    interrupted command should not wait for, and the freeing of the interpreter's memory."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
