"""`edgekd profile` (time an artifact on a device, and record it as a profile row) and `edgekd devices`
(the devices registered by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.options import TargetsDirOption
from edgekd.errors import EdgeKDError

devices_app = typer.Typer(
    help="Devices to profile on: local, ssh://[user@]host[:port], adb://SERIAL, by name.",
    no_args_is_help=True,
)


def profile_command(
    artifact: Annotated[Path, typer.Argument(help="An exported model (.tflite, .xml, .onnx, .mlpackage).")],
    device: Annotated[
        str, typer.Option(help="local, ssh://[user@]host[:port], adb://SERIAL, or a name from `devices add`.")
    ] = "local",
    threads: Annotated[int, typer.Option(help="Inference threads (at least 1).")] = 1,
    runs: Annotated[int, typer.Option(help="Minimum timed runs (at least 1).")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 10,
    min_seconds: Annotated[float, typer.Option(help="Minimum timed seconds.")] = 1.0,
    compute_units: Annotated[
        str, typer.Option(help="Core ML on a Mac: ALL, CPU_AND_NE, CPU_ONLY or CPU_AND_GPU.")
    ] = "ALL",
    timeout: Annotated[float, typer.Option(help="Seconds before a device's bench is stopped.")] = 600,
    record: Annotated[
        bool,
        typer.Option(
            help="Append the measurement to the target's profile (needs --target). Only the target's own "
            "hardware is recorded: local for the host target, any other device if it was registered for "
            "the target (devices add NAME URI --target T)."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="With --record: record a device that is not the target's hardware anyway; the row's source "
            "says it was forced."
        ),
    ] = False,
    target: Annotated[
        str | None, typer.Option(help="The target the measurement is a profile row of.")
    ] = None,
    profiles_dir: Annotated[
        Path | None, typer.Option(help="Where --record writes TARGET.csv (default: the user's profiles).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the measurement as JSON here.")] = None,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Time an artifact on a device: median, p90, p99, IQR, cold start, the device's fingerprint."""
    from dataclasses import asdict

    from rich.console import Console

    from edgekd._io import write_json_atomic
    from edgekd.devices import ProfileSettings, artifact_format
    from edgekd.devices.record import artifact_contract, device_mismatch
    from edgekd.devices.registry import connect

    # Everything that can be refused is, before a device is contacted or a second is spent timing.
    settings = ProfileSettings(threads, runs, warmup, min_seconds, compute_units, timeout)
    if record and target is None:
        raise EdgeKDError("--record needs --target: the measurement becomes a row of profiles/TARGET.csv.")
    if force and not record:
        raise EdgeKDError("--force applies to --record only (a device that is not the target's hardware).")
    if target is not None:
        from edgekd.targets import get_target

        get_target(target, tuple(targets_dir or ()))  # a bad name fails before the device is contacted
    artifact_format(artifact)
    chosen = connect(device)
    forced = None
    if record:
        mismatch = device_mismatch(device, target)
        if mismatch and not force:
            raise EdgeKDError(
                f"--record --target {target}: {mismatch}; a profile row must come from the target's own "
                "hardware. Pass --force to record it anyway (its source will say so)."
            )
        artifact_contract(artifact)
        forced = mismatch
    console = Console()
    with console.status(f"profiling {artifact.name} on {device}"):
        measurement = chosen.profile(artifact, settings)
    _print_measurement(console, measurement)
    if out is not None:
        write_json_atomic(out, asdict(measurement))
    if record:
        from edgekd.devices.record import record_measurement

        path = record_measurement(measurement, artifact, target, profiles_dir, forced)
        note = " (forced: not the target's hardware)" if forced else ""
        console.print(f"recorded in {path}{note}; refit with: edgekd latency calibrate --target {target}")


def _print_measurement(console, measurement) -> None:
    from rich.table import Table

    from edgekd.devices import runtime_description

    lat, fp = measurement.latency, measurement.fingerprint
    table = Table(title=f"{measurement.artifact} on {measurement.device}", show_header=False)
    table.add_row("runtime", runtime_description(lat))
    central = "median" if lat.statistic == "median" else f"{lat.statistic} (the tool reports no median)"
    table.add_row(central, f"{lat.central_ms:.3f} ms")
    table.add_row("p90 / p99 / IQR", f"{lat.p90_ms:.3f} / {lat.p99_ms:.3f} / {lat.iqr_ms:.3f} ms")
    table.add_row("runs", str(lat.runs))
    table.add_row("cold start", f"{lat.cold_start_ms:.1f} ms (load + first inference)")
    device = ", ".join(
        f"{k} {fp[k]}"
        for k in ("cpu", "model", "cores", "governor", "clock_mhz", "temperature_c", "os")
        if fp.get(k)
    )
    table.add_row("device", device)
    table.add_row(
        "throttled",
        {None: "unknown (no clock or temperature readable)"}.get(
            measurement.throttled, str(measurement.throttled)
        ),
    )
    if measurement.memory_mb is not None:
        table.add_row("peak memory", f"{measurement.memory_mb:.1f} MB")
    console.print(table)
    if measurement.layers:
        layers = Table(title="slowest layers")
        for column in ("layer", "type", "ms"):
            layers.add_column(column, justify="right" if column == "ms" else "left")
        for row in measurement.layers[:15]:
            layers.add_row(row["layer"], row["type"], f"{row['ms']:.3f}")
        console.print(layers)


@devices_app.command("add")
def devices_add(
    name: Annotated[str, typer.Argument(help="A short name, e.g. pi5-desk.")],
    uri: Annotated[
        str, typer.Argument(help="ssh://[user@]host[:port] (no password: keys only), adb://SERIAL or local.")
    ],
    python: Annotated[str | None, typer.Option(help="SSH: the device's Python (default python3).")] = None,
    ssh_config: Annotated[
        str | None, typer.Option(help="SSH: an ssh_config file (default ~/.ssh/config).")
    ] = None,
    benchmark_model: Annotated[
        str | None, typer.Option(help="ADB: benchmark_model's path on the phone.")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="The target this device is (e.g. pi5): `profile --record --target` accepts it there."
        ),
    ] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite a device of the same name.")] = False,
    targets_dir: TargetsDirOption = None,
) -> None:
    """Register a device under a name (in devices.yaml, readable by you alone)."""
    from edgekd.devices.registry import DeviceEntry, add_device

    if target is not None:
        from edgekd.targets import get_target

        get_target(target, tuple(targets_dir or ()))
    path = add_device(DeviceEntry(name, uri, python, ssh_config, benchmark_model, target), replace=replace)
    typer.echo(f"added {name} ({uri}{f', target {target}' if target else ''}) to {path}")


@devices_app.command("list")
def devices_list() -> None:
    """The registered devices."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.devices.registry import devices_file, load_devices

    table = Table(title=f"devices ({devices_file()})")
    for column in ("name", "uri", "target", "python", "ssh config", "benchmark_model"):
        table.add_column(column)
    for e in load_devices().values():
        table.add_row(
            e.name, e.uri, e.target or "", e.python or "", e.ssh_config or "", e.benchmark_model or ""
        )
    Console().print(table)


@devices_app.command("check")
def devices_check(name: Annotated[str, typer.Argument(help="A device name or URI.")]) -> None:
    """Reach the device and list what it has: CPU, OS, runtime versions."""
    from rich.console import Console
    from rich.table import Table

    from edgekd.devices.registry import connect

    device = connect(name)
    found = device.check()
    table = Table(title=f"{name}: reachable ({device.uri})", show_header=False)
    for key, value in found.items():
        if key == "runtimes":
            for package, version in value.items():
                table.add_row(package, version or "not installed")
        elif value is not None:
            table.add_row(key, str(value))
    Console().print(table)


@devices_app.command("remove")
def devices_remove(name: Annotated[str, typer.Argument(help="The device's name.")]) -> None:
    """Forget a device."""
    from edgekd.devices.registry import remove_device

    typer.echo(f"removed {name} from {remove_device(name)}")
