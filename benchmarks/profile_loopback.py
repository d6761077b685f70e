"""The same .tflite profiled on this host directly (`--device local`) and through a real OpenSSH
server on 127.0.0.1 (`ssh://`): the SSH path (copy, remote bench script, JSON back) must not change
what is measured. Interleaved repeats, one thread each, ratio of medians.

    python benchmarks/profile_loopback.py      # writes benchmarks/results/profile_loopback.json

Needs root and openssh-server (as the tests do: tests/sshd.py). The artifact is the EuroSAT student
that benchmarks/export_eurosat.py exports (fp32 LiteRT, 64 px), or a 224 px mobilenetv3_small_100
with re-initialised BatchNorms when that cache is absent.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import sshd  # noqa: E402  (the same loopback server the tests start)

OUT = ROOT / "benchmarks" / "results" / "profile_loopback.json"
CACHED = ROOT / "benchmarks" / ".cache" / "exports" / "model-fp32.tflite"
REPEATS = 5
PROTOCOL = dict(threads=1, runs=200, warmup=20, min_seconds=2.0)


def artifact(scratch: Path) -> Path:
    if CACHED.exists():
        return CACHED
    from edgekd.artifact import make_contract
    from edgekd.catalog import build_model, randomize_norm_layers
    from edgekd.export import export
    from edgekd.preprocessing import Preprocessing

    model = randomize_norm_layers(build_model("mobilenetv3_small_100", 10)).eval()
    contract = make_contract(
        "mobilenetv3_small_100", "tflite", Preprocessing(224, (0.5,) * 3, (0.25,) * 3, tuple("0123456789"))
    )
    return export(model, "tflite", scratch, contract=contract).path


def main() -> int:
    from edgekd.devices.local import LocalDevice
    from edgekd.devices.ssh import SSHDevice

    reason = sshd.unavailable_reason()
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory() as scratch:
        server = sshd.start(Path(scratch) / "sshd")
        try:
            path = artifact(Path(scratch))
            local = LocalDevice()
            remote = SSHDevice.from_uri(server.uri, python=sys.executable, ssh_config=server.client_config)
            rows = {"local": [], "ssh": []}
            for repeat in range(REPEATS):
                for name, device in (("local", local), ("ssh", remote)):
                    m = device.profile(path, **PROTOCOL)
                    rows[name].append(
                        {
                            "median_ms": m.latency.median_ms,
                            "p90_ms": m.latency.p90_ms,
                            "iqr_ms": m.latency.iqr_ms,
                            "runs": m.latency.runs,
                            "cold_start_ms": m.latency.cold_start_ms,
                        }
                    )
                    print(
                        f"repeat {repeat} {name:5s}: median {m.latency.median_ms:.4f} ms, "
                        f"IQR {m.latency.iqr_ms:.4f} ms, {m.latency.runs} runs",
                        flush=True,
                    )
        finally:
            server.stop()
    medians = {name: statistics.median(r["median_ms"] for r in runs) for name, runs in rows.items()}
    ratio = medians["ssh"] / medians["local"]
    result = {
        "artifact": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name,
        "protocol": PROTOCOL,
        "repeats": rows,
        "median_of_medians_ms": medians,
        "ssh_over_local": ratio,
        "within_0.8_1.25": 0.8 <= ratio <= 1.25,
    }
    OUT.write_text(json.dumps(result, indent=2))
    print(f"\n{'device':8s} {'median of medians ms':>22s}")
    for name, value in medians.items():
        print(f"{name:8s} {value:22.4f}")
    print(f"ssh / local = {ratio:.3f} (acceptance: between 0.8 and 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
