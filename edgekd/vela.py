"""Compile an int8 `.tflite` for an Arm Ethos-U NPU with Arm's Vela compiler and read back what it
reports: the estimated inference time, memory use, and which operators stay on the host CPU.

Vela runs in a subprocess (`python -m ethosu.vela`, from the `vela` extra); its summary CSV gives
time, cycles and memory, its stdout the CPU/NPU operator counts and the reason each unsupported
operator was refused, and the compiled `_vela.tflite` itself says which ops fall back: every op that
is not Vela's `ethos-u` custom op runs on the CPU. The estimate is Vela's own performance model of
the NPU, not a measurement; CPU-side ops are not included in it. `estimate_on_npu` is edgekd's one
Vela estimate of a model: it exports the int8 file edgekd would ship and compiles it, so this module
sits above the exporter (`edgekd.predict` and the search ask it; the cost model never does).

What makes a PyTorch graph NPU-clean (checked with Vela 5.2 on Ethos-U55-256; `edgekd.export`
int8 does all of it, and mobilenetv2_050, mobilenetv3_small_050, lcnet_050 and resnet10t at 96 px
come out with 100 % of their ops on the NPU):
  * every activation int8. An op left in float goes to the CPU together with the DEQUANTIZE and
    QUANTIZE around it (and Vela 5.2 rejects a float HARD_SWISH outright). The stock litert
    quantizer misses residual adds under non-strict capture, the squeeze-excite MEAN, and the
    inside of hard-sigmoid and SiLU; `edgekd.export.tflite` captures strictly and annotates those;
  * only ops the NPU has: DIV, for instance, is int8 in TFLite but not an Ethos-U55 op, and a MEAN
    over channels is refused ("Unsupported depth-reduction");
  * NHWC I/O through `litert_torch.to_channel_last_io`: the converter cancels the wrapper's layout
    transposes. PyTorch's symmetric padding of a stride-2 convolution becomes an explicit PAD,
    which Vela fuses into the convolution, so it costs nothing.
"""

from __future__ import annotations

import configparser
import csv
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd._io import write_json_atomic, write_text_atomic
from edgekd._registry import did_you_mean
from edgekd.errors import ConfigError, DependencyError, EdgeKDError, ExportError

if TYPE_CHECKING:
    from edgekd.targets import Target

log = logging.getLogger(__name__)

DEFAULT_ACCELERATOR = "ethos-u55-256"
# From Vela's shipped Arm/vela.ini: a U55 at 500 MHz beside a Cortex-M host, SRAM shared with the
# CPU for the tensor arena, weights read from off-chip flash.
DEFAULT_SYSTEM_CONFIG = "Ethos_U55_High_End_Embedded"
DEFAULT_MEMORY_MODE = "Shared_Sram"
NPU_CUSTOM_OP = "ethos-u"


@dataclass(frozen=True)
class CpuOp:
    """One operator Vela left on the CPU."""

    op_type: str  # TFLite builtin name, e.g. "GELU", "DEQUANTIZE"
    name: str  # its output tensor, which litert-torch names after the PyTorch module path
    reason: str = ""  # Vela's reason, when it gave one


@dataclass(frozen=True)
class VelaReport:
    compiled_path: Path  # the `_vela.tflite` to deploy with the Ethos-U driver
    accelerator: str
    system_config: str
    memory_mode: str
    inference_ms: float  # Vela's estimate for the NPU part of one inference
    cycles: int | None  # NPU cycles of one inference, when Vela reports them
    macs: int | None
    sram_bytes: int  # tensor arena (and weights, in Sram_Only) in SRAM
    flash_bytes: int  # on-chip + off-chip flash: weights and the command stream
    dram_bytes: int
    npu_ops: int
    cpu_ops: int
    cpu_fallbacks: tuple[CpuOp, ...]
    vela_version: str

    @property
    def npu_op_share(self) -> float:
        """NPU operators / all operators, as Vela counts them (0.0 for an empty graph)."""
        total = self.npu_ops + self.cpu_ops
        return self.npu_ops / total if total else 0.0

    @property
    def cpu_op_types(self) -> tuple[str, ...]:
        return tuple(sorted({op.op_type for op in self.cpu_fallbacks}))


def compile_for_ethos_u(
    tflite_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    accelerator: str = DEFAULT_ACCELERATOR,
    system_config: str = DEFAULT_SYSTEM_CONFIG,
    memory_mode: str = DEFAULT_MEMORY_MODE,
    *,
    config: str | os.PathLike[str] | None = None,
    timeout_s: float = 600.0,
) -> VelaReport:
    """Compile an int8 `.tflite` with Vela for `accelerator` (a Vela `--accelerator-config`, e.g.
    "ethos-u55-128", "ethos-u65-256") under `system_config` and `memory_mode`, sections of the Vela
    `config` .ini (default: Vela's shipped Arm/vela.ini). Writes `<stem>_vela.tflite`, Vela's
    summary CSV, its log and the report as JSON into `out_dir`; returns the report.

    Raises `DependencyError` without Vela, `ConfigError` for a system config or memory mode the .ini
    does not define, and `ExportError` with Vela's own message when it fails."""
    _require_vela()
    source = Path(tflite_path)
    if not source.is_file():
        raise ExportError(f"{source}: no such .tflite file to compile for Ethos-U.")
    ini = Path(config).resolve() if config is not None else _shipped_ini()
    _check_ini_sections(ini, system_config, memory_mode)
    # Vela looks a relative --config up in its own config_files/ (and warns when given the full path).
    config_arg = str(ini) if config is not None else "Arm/vela.ini"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "ethosu.vela", str(source.resolve()),
        "--accelerator-config", accelerator,
        "--config", config_arg,
        "--system-config", system_config,
        "--memory-mode", memory_mode,
        "--show-cpu-operations",
    ]  # fmt: skip
    log_path = out / f"{source.stem}_vela.log"
    with tempfile.TemporaryDirectory(prefix=f".{source.stem}-vela-", dir=out) as tmp:
        command += ["--output-dir", tmp]
        log.debug("running %s", " ".join(command))
        try:
            done = subprocess.run(command, capture_output=True, text=True, cwd=tmp, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise ExportError(
                f"Vela did not finish compiling {source.name} within {timeout_s:.0f} s; "
                "pass a larger timeout_s or a smaller model."
            ) from e
        write_text_atomic(log_path, f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
        if done.returncode != 0:
            raise ExportError(
                f"Vela could not compile {source.name} for {accelerator}: "
                f"{_vela_message(done.stdout, done.stderr, done.returncode)} (full log: {log_path})"
            )
        compiled_tmp = Path(tmp) / f"{source.stem}_vela.tflite"
        summaries = sorted(Path(tmp).glob(f"{source.stem}_summary_*.csv"))
        if not compiled_tmp.exists() or not summaries:
            raise ExportError(
                f"Vela exited cleanly but wrote no {compiled_tmp.name} or summary CSV for {source.name} "
                f"(full log: {log_path})."
            )
        summary = _read_summary(summaries[0])
        cpu_ops, npu_ops = _op_counts(done.stdout, log_path)
        fallbacks = _cpu_fallbacks(compiled_tmp, _refusal_reasons(done.stdout))
        compiled = out / compiled_tmp.name
        os.replace(summaries[0], out / summaries[0].name)
        os.replace(compiled_tmp, compiled)  # same directory tree: an atomic rename
    report = VelaReport(
        compiled_path=compiled,
        accelerator=accelerator,
        system_config=system_config,
        memory_mode=memory_mode,
        inference_ms=float(summary["inference_time"]) * 1000.0,
        cycles=_int_or_none(summary.get("cycles_total")),
        macs=_int_or_none(summary.get("nn_macs")),
        sram_bytes=_kib(summary, "sram_memory_used"),
        flash_bytes=_kib(summary, "on_chip_flash_memory_used") + _kib(summary, "off_chip_flash_memory_used"),
        dram_bytes=_kib(summary, "dram_memory_used"),
        npu_ops=npu_ops,
        cpu_ops=cpu_ops,
        cpu_fallbacks=fallbacks,
        vela_version=_vela_version(),
    )
    write_json_atomic(compiled.with_name(compiled.name + ".json"), asdict(report))
    if fallbacks:
        log.info(
            "%s: %d of %d ops stay on the CPU (%s)",
            source.name,
            cpu_ops,
            cpu_ops + npu_ops,
            ", ".join(report.cpu_op_types),
        )
    return report


def _require_vela() -> None:
    try:
        found = importlib.util.find_spec("ethosu.vela") is not None
    except ModuleNotFoundError:  # the parent package `ethosu` is missing
        found = False
    if not found:
        raise DependencyError(
            "compiling for Ethos-U needs Arm's Vela compiler (package ethos-u-vela), which is not "
            "installed; install it with: pip install 'edgekd[vela]'"
        )


def _shipped_ini() -> Path:
    spec = importlib.util.find_spec("ethosu")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        ini = Path(root) / "config_files" / "Arm" / "vela.ini"
        if ini.is_file():
            return ini
    raise DependencyError(
        "the installed ethos-u-vela ships no config_files/Arm/vela.ini; reinstall it with: "
        "pip install --force-reinstall 'edgekd[vela]', or pass config= with your own .ini."
    )


def _check_ini_sections(ini: Path, system_config: str, memory_mode: str) -> None:
    parser = configparser.ConfigParser()
    try:
        if not parser.read(ini):
            raise ConfigError(f"{ini}: Vela config file not found.")
    except configparser.Error as e:
        raise ConfigError(f"{ini}: not a readable Vela config file ({e}).") from e
    for kind, option, value in (
        ("System_Config", "system_config", system_config),
        ("Memory_Mode", "memory_mode", memory_mode),
    ):
        names = [s.split(".", 1)[1] for s in parser.sections() if s.startswith(f"{kind}.")]
        if value not in names:
            raise ConfigError(
                f"{option} {value!r} is not defined in {ini} (no [{kind}.{value}] section)."
                f"{did_you_mean(value, names)}"
            )


def _vela_message(stdout: str, stderr: str, returncode: int) -> str:
    """Vela's own words for a failure: the exception or argparse error it ended with, and the
    detail lines it printed after it (e.g. " - IFM has to be 8bit"), without the traceback."""
    lines = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        match = re.match(r"^(?:[\w.]*(?:Error|Exception)|vela: error|Error):\s*(.+)$", lines[i])
        if match:
            return " ".join([match.group(1).strip("'\""), *lines[i + 1 :]])
    return lines[-1] if lines else f"exit status {returncode} with no output"


def _read_summary(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "inference_time" not in rows[0]:
        raise ExportError(f"{path}: Vela's summary CSV has no inference_time column; unknown Vela format.")
    return rows[0]


def _kib(summary: dict[str, str], key: str) -> int:
    value = summary.get(key) or "0"
    return round(float(value) * 1024)


def _int_or_none(value: str | None) -> int | None:
    try:
        return round(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _op_counts(stdout: str, log_path: Path) -> tuple[int, int]:
    counts = dict(re.findall(r"^(CPU|NPU) operators = (\d+)", stdout, flags=re.MULTILINE))
    if set(counts) != {"CPU", "NPU"}:
        raise ExportError(
            f"Vela's output has no 'CPU operators = N' / 'NPU operators = M' summary (see {log_path}); "
            f"this Vela ({_vela_version()}) prints a format edgekd does not read."
        )
    return int(counts["CPU"]), int(counts["NPU"])


def _refusal_reasons(stdout: str) -> dict[tuple[str, str], str]:
    """(op type, output name) -> reason, from Vela's 'Warning (supported operators)' blocks."""
    reasons: dict[tuple[str, str], str] = {}
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^Warning \([^)]*\) operator: (\w+), ofm: '(.*)'\s*$", line)
        if not match:
            continue
        detail = []
        for following in lines[i + 1 :]:
            if not following.strip() or following.startswith("Warning"):
                break
            detail.append(following.strip().removeprefix("Reason: "))
        reasons[(match.group(1), match.group(2))] = " ".join(detail)
    return reasons


def _cpu_fallbacks(compiled: Path, reasons: dict[tuple[str, str], str]) -> tuple[CpuOp, ...]:
    """Every op in the compiled flatbuffer that is not Vela's NPU custom op, in graph order."""
    return tuple(
        CpuOp(op_type, name, reasons.get((op_type, name), ""))
        for op_type, name in tflite_ops(compiled)
        if op_type != NPU_CUSTOM_OP
    )


def tflite_ops(path: str | os.PathLike[str]) -> tuple[tuple[str, str], ...]:
    """(op type, output tensor name) of every operator in a `.tflite`, in graph order, read with the
    flatbuffer schema Vela ships. Builtins are named as TFLite names them ("CONV_2D"); custom ops
    by their custom code (Vela's NPU op is "ethos-u").
    """
    _require_vela()
    from ethosu.vela.tflite.BuiltinOperator import BuiltinOperator
    from ethosu.vela.tflite.Model import Model

    names = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}
    model = Model.GetRootAsModel(Path(path).read_bytes(), 0)
    found = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = (code.CustomCode() or b"").decode(errors="replace")
            output = graph.Tensors(op.Outputs(0)).Name() if op.OutputsLength() else b""
            found.append(
                (custom or names.get(builtin, f"BUILTIN_{builtin}"), (output or b"").decode(errors="replace"))
            )
    return tuple(found)


def _vela_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ethos-u-vela")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class NpuEstimate:
    """Vela's estimate for an Ethos-U target, from the int8 file edgekd would ship."""

    latency_ms: float
    sram_bytes: int
    flash_bytes: int
    npu_ops: int
    cpu_ops: int
    cpu_fallbacks: tuple[str, ...]  # "OP_TYPE name: Vela's reason"
    provenance: str

    @property
    def npu_op_share(self) -> float:
        return self.npu_ops / max(self.npu_ops + self.cpu_ops, 1)


def estimate_on_npu(
    model, target: Target, input_size: int, *, work_dir: Path | None = None, calibration_images: int = 64
) -> NpuEstimate:
    """Export `model` to int8 TFLite the way edgekd ships it and let Vela estimate it for `target`.

    The weights are re-initialised so no branch folds away (`catalog.randomize_norm_layers`), and the
    quantizer is calibrated on random images: Vela's timing depends on shapes and on how well the
    weights compress, not on accuracy, so a model's latency can be estimated before it is trained."""
    import copy
    import tempfile

    import torch

    from edgekd.artifact import Contract
    from edgekd.catalog import randomize_norm_layers
    from edgekd.export import export

    if target.vela is None:
        raise EdgeKDError(f"target {target.name} has no vela: section; Vela cannot estimate it.")
    model = randomize_norm_layers(copy.deepcopy(model)).eval()
    images = torch.randn(
        calibration_images, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)
    )
    contract = Contract(
        arch=getattr(model, "default_cfg", {}).get("architecture", type(model).__name__),
        input_name="input",
        input_shape=(1, input_size, input_size, 3),
        layout="NHWC",
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        labels=(),
        precision="int8",
    )
    with tempfile.TemporaryDirectory(prefix="edgekd-vela-") as scratch:
        out = Path(work_dir) if work_dir is not None else Path(scratch)
        artifact = export(
            model, "tflite", out, contract=contract, calibration=images, min_calibration=calibration_images
        )
        report = compile_for_ethos_u(
            artifact.path,
            out / "vela",
            accelerator=target.vela.accelerator,
            system_config=target.vela.system_config,
            memory_mode=target.vela.memory_mode,
        )
    fallbacks = tuple(f"{op.op_type} {op.name}: {op.reason}" for op in report.cpu_fallbacks)
    return NpuEstimate(
        latency_ms=report.inference_ms,
        sram_bytes=report.sram_bytes,
        flash_bytes=report.flash_bytes,
        npu_ops=report.npu_ops,
        cpu_ops=report.cpu_ops,
        cpu_fallbacks=fallbacks,
        provenance=(
            f"Vela {report.vela_version} estimate for {target.vela.accelerator} "
            f"({target.vela.system_config}, {target.vela.memory_mode}) of the int8 TFLite file; "
            f"CPU-side ops are not timed"
        ),
    )
