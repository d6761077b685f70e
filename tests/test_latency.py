import math

import numpy as np
import pytest

from edgekd.analysis import COST_CLASSES, analyze
from edgekd.catalog import build_model
from edgekd.latency import (
    Coefficients,
    fit_coefficients,
    model_time_s,
    op_times_s,
    predict_latency_ms,
    prior_coefficients,
)
from edgekd.op_tables import OpTable, op_table
from edgekd.targets import get_target, list_targets

ROOFLINE_TARGETS = [n for n in list_targets() if get_target(n).latency_model.estimator == "roofline"]


def _theta(
    efficiency: dict[str, float], memory_efficiency: float, overhead_us: float, invoke_us: float = 30.0
) -> np.ndarray:
    return Coefficients(
        target="t",
        runtime="r",
        precision="fp32",
        threads=1,
        efficiency={c: efficiency.get(c, 0.5) for c in COST_CLASSES},
        memory_efficiency=memory_efficiency,
        overhead_us={c: overhead_us for c in COST_CLASSES},
        invoke_overhead_us=invoke_us,
        rows=0,
    ).vector()


def test_op_time_is_max_of_compute_and_memory_plus_overhead():
    """Checked by hand on pi5 (153.6 GFLOP/s fp32 over 4 cores, 17.1 GB/s) with 2 of 4 threads."""
    target = get_target("pi5")
    table = OpTable(
        classes=np.array([COST_CLASSES.index("conv"), COST_CLASSES.index("elementwise")]),
        work=np.array([2e8, 1e5]),  # a 100 M MAC convolution; an add of 100 k elements
        activation_values=np.array([1e5, 3e5]),
        weight_values=np.array([1e4, 0.0]),
    )
    theta = _theta({"conv": 0.5, "elementwise": 0.25}, memory_efficiency=0.8, overhead_us=7.0)
    times = op_times_s(table, target, "fp32", threads=2, theta=theta)
    peak = 153.6e9 * 2 / 4
    conv_compute = 2e8 / (peak * 0.5)  # 5.2 ms
    conv_memory = (1e5 * 4 + 1e4 * 4) / (17.1e9 * 0.8)  # 32 µs: compute-bound
    add_compute = 1e5 / (peak * 0.25)  # 5.2 µs
    add_memory = 3e5 * 4 / (17.1e9 * 0.8)  # 88 µs: memory-bound
    assert times[0] == pytest.approx(max(conv_compute, conv_memory) + 7e-6)
    assert times[1] == pytest.approx(max(add_compute, add_memory) + 7e-6)
    # int8 moves a quarter of the bytes and runs on the int8 peak
    int8 = op_times_s(table, target, "int8", threads=2, theta=theta)
    assert int8[1] == pytest.approx(max(1e5 / (614.4e9 / 2 * 0.25), 3e5 / (17.1e9 * 0.8)) + 7e-6)
    # the model's time adds the per-inference overhead once
    assert model_time_s(table, target, "fp32", 2, theta) == pytest.approx(times.sum() + 30e-6)


@pytest.fixture(scope="module")
def tables():
    archs = [
        "mobilenetv3_small_050",
        "lcnet_050",
        "resnet10t",
        "mobilenetv2_050",
        "regnetx_002",
        "ghostnet_050",
    ]
    # op_table (1000 classes, cached per process) is what calibration fits on: the leave-one-out test
    # and the width test below trace most of the same (arch, size) pairs, so each is traced once.
    return [op_table(a, size) for a in archs for size in (64, 96)]


@pytest.mark.slow
def test_fit_recovers_the_latencies_of_known_coefficients(tables):
    """Latencies generated from a known coefficient set are reproduced by the fit, which starts from the
    target's priors, far from the truth."""
    target = get_target("pi5")
    truth = _theta(
        {"conv": 0.6, "pointwise": 0.45, "depthwise": 0.12, "grouped": 0.2, "matmul": 0.3, "pool": 0.05},
        memory_efficiency=0.3,
        overhead_us=12.0,
    )
    measured = [model_time_s(t, target, "fp32", 4, truth) * 1e3 for t in tables]
    fitted = fit_coefficients(tables, measured, target, "fp32", 4)
    predicted = [model_time_s(t, target, "fp32", 4, fitted) * 1e3 for t in tables]
    errors = np.abs(np.array(predicted) / np.array(measured) - 1)
    assert errors.max() < 0.05
    priors = prior_coefficients(target, "fp32", 4).vector()
    prior_errors = [
        abs(op_times_s(t, target, "fp32", 4, priors).sum() * 1e3 / m - 1) for t, m in zip(tables, measured)
    ]
    assert np.mean(prior_errors) > 5 * errors.mean()


@pytest.mark.parametrize("target_name", ROOFLINE_TARGETS)
@pytest.mark.parametrize(
    "family",
    [
        ["mobilenetv2_050", "mobilenetv2_075", "mobilenetv2_100", "mobilenetv2_140"],
        ["lcnet_050", "lcnet_075", "lcnet_100"],
    ],
)
def test_prediction_grows_with_width_within_a_family(target_name, family):
    target = get_target(target_name)
    rng = np.random.default_rng(0)
    tables = [op_table(arch, 96) for arch in family]
    coefficient_sets = [prior_coefficients(target, target.default_precision, target.threads).vector()]
    coefficient_sets += [np.log(rng.uniform(0.01, 1.0, 2 * len(COST_CLASSES) + 2)) for _ in range(3)]
    for theta in coefficient_sets:
        latencies = [
            op_times_s(table, target, target.default_precision, target.threads, theta).sum()
            for table in tables
        ]
        assert latencies == sorted(latencies) and len(set(latencies)) == len(latencies)


def test_uncalibrated_group_falls_back_to_the_priors_and_says_so():
    from edgekd.latency import calibrate

    target = get_target("pi5")  # its published rows are ncnn/ORT/PyTorch, none LiteRT
    coefficients = calibrate(target)
    assert coefficients.rows == 0 and "uncalibrated" in coefficients.provenance
    assert "ncnn fp16 4 threads" in coefficients.provenance
    cost = analyze(build_model("lcnet_050", 10), 64)
    expected = (
        sum(
            max(
                layer.work / (target.peak_gflops * 1e9 * target.latency_model.efficiency),
                (layer.input_bytes + layer.output_bytes + 4 * layer.params)
                / (target.memory.bandwidth_gbps * 1e9 * target.latency_model.memory_efficiency),
            )
            + target.latency_model.per_layer_overhead_us * 1e-6
            for layer in cost.dispatched
        )
        + target.latency_model.invoke_overhead_us * 1e-6
    )
    assert predict_latency_ms(cost, target) == pytest.approx(expected * 1e3)


@pytest.mark.slow
def test_validate_leave_one_out_on_a_users_board(tmp_path, monkeypatch):
    """A user's target (extends pi5) with its own profile: `latency validate` fits all rows but one,
    predicts that one, and writes the table's figures as JSON."""
    import json

    from edgekd.cli import main
    from edgekd.op_tables import op_table
    from edgekd.profiles import ProfileRow, write_profile_file

    targets, profiles = tmp_path / "targets", tmp_path / "profiles"
    targets.mkdir()
    (targets / "lab-board.yaml").write_text(
        "name: lab-board\nextends: pi5\ndescription: our lab's Pi 5\n"
        "latency_model: {profile_runtime: litert}\n"
    )
    monkeypatch.setenv("EDGEKD_PROFILES_PATH", str(profiles))
    target = get_target("lab-board", (targets,))
    truth = _theta({"conv": 0.5, "pointwise": 0.4, "depthwise": 0.1}, memory_efficiency=0.4, overhead_us=9.0)
    archs = ["mobilenetv3_small_050", "lcnet_050", "lcnet_075", "mobilenetv2_050", "regnetx_002", "resnet10t"]
    rows = [
        ProfileRow(
            a,
            s,
            "fp32",
            "litert",
            "2.3.0",
            4,
            round(model_time_s(op_table(a, s), target, "fp32", 4, truth) * 1e3 * f, 4),
            None,
            "measured: a test",
            "2026-11-25",
        )
        for a in archs
        for s, f in ((64, 1.03), (96, 0.97))
    ]
    write_profile_file(profiles / "lab-board.csv", rows)
    out = tmp_path / "validate.json"
    assert (
        main(
            ["latency", "validate", "--target", "lab-board", "--targets-dir", str(targets), "--out", str(out)]
        )
        == 0
    )
    (group,) = json.loads(out.read_text())["groups"]
    assert (group["runtime"], group["precision"], group["threads"], group["rows"]) == (
        "litert",
        "fp32",
        4,
        12,
    )
    assert group["mape"] < 10 and group["spearman"] > 0.95 and not group["published_only"]
    errors = [abs(p["predicted_ms"] / p["measured_ms"] - 1) * 100 for p in group["predictions"]]
    assert group["mape"] == pytest.approx(np.mean(errors), abs=0.05)
    assert group["within_20"] == pytest.approx(100 * np.mean(np.array(errors) <= 20))
    assert math.isfinite(group["spearman"])


def test_predict_command_prints_breakdown_and_provenance(capsys):
    from edgekd.cli import main

    assert main(["latency", "predict", "lcnet_050", "--target", "pi5", "--input-size", "96"]) == 0
    out = capsys.readouterr().out
    assert "lcnet_050 @ 96 px on pi5" in out and "total" in out and "uncalibrated" in out


@pytest.mark.slow
def test_ethos_u55_latency_comes_from_vela_on_the_int8_file():
    from edgekd.predict import predict_model

    prediction = predict_model("lcnet_050", get_target("ethos-u55"), input_size=64, num_classes=10)
    npu = prediction.npu
    assert npu is not None and prediction.latency_ms == npu.latency_ms > 0
    assert npu.npu_op_share == 1.0 and npu.cpu_fallbacks == ()
    assert 0 < npu.sram_bytes < get_target("ethos-u55").memory.sram_kb * 1024
    assert (
        "Vela" in prediction.coefficients.provenance and "ethos-u55-256" in prediction.coefficients.provenance
    )
