"""The run's human-readable report (`report.md`) and metrics table, from `result.json`'s content."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from edgekd._io import atomic_path, write_text_atomic


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def render_markdown(result: dict[str, Any]) -> str:
    t, s, e = result["teacher"], result["student"], result["export"]
    lat, target = result["host_latency"], result["target"]
    lines = [
        f"# edgekd fit: {s['arch']} for {target['name']}",
        "",
        f"{target['description']}. Data: {result['data']['name']} "
        f"({result['data']['train']}/{result['data']['val']}/{result['data']['test']} train/val/test images, "
        f"{result['data']['num_classes']} classes, {result['data']['input_size']} px).",
        "",
        "| | teacher | student |",
        "| --- | --- | --- |",
        f"| model | {t['arch']} | {s['arch']} |",
        f"| params | {t['params']:,} | {s['params']:,} |",
        f"| MACs | {t['macs']:,} | {s['macs']:,} |",
        f"| test accuracy | {_pct(t['test_accuracy'])} | {_pct(s['test_accuracy'])} |",
        "",
        f"Teacher: {t['source']}.",
        f"Student choice: {s['reason']}",
        "",
        "## Export",
        "",
        "| artifact | size | top-1 agreement | max abs logit diff | artifact accuracy |",
        "| --- | --- | --- | --- | --- |",
        f"| `{e['file']}` ({e['format']}, {e['precision']}, {e['layout']}) | {e['size_bytes'] / 1e6:.2f} MB "
        f"| {_pct(e['parity']['top1_agreement'])} | {e['parity']['max_abs_diff']:.2e} "
        f"| {_pct(e['parity']['artifact_accuracy'])} |",
        "",
        "## Latency",
        "",
        "| where | how | median ms | p90 ms |",
        "| --- | --- | --- | --- |",
        f"| {target['name']} | predicted ({target['default_precision']}): "
        f"{s.get('predicted_by', 'roofline')} | {s['predicted_latency_ms']:.2f} | |",
        f"| this host: {lat['device']} | measured, {lat['runtime']} {lat['runtime_version']}, "
        f"{lat['threads']} threads, {lat['runs']} runs | {lat['median_ms']:.3f} | {lat['p90_ms']:.3f} |",
        "",
        f"Cold start on this host (load + first inference): {lat['cold_start_ms']:.1f} ms.",
        "",
        "## Distillation",
        "",
        "| epoch | train loss | val accuracy | val agreement with teacher |",
        "| --- | --- | --- | --- |",
    ]
    for m in result["history"]:
        lines.append(
            f"| {m['epoch']} | {m['train_loss']:.4f} | {_pct(m['val_accuracy'])} "
            f"| {_pct(m['val_teacher_agreement'])} |"
        )
    return "\n".join(lines) + "\n"


def write_report(path: Path, result: dict[str, Any]) -> None:
    write_text_atomic(path, render_markdown(result))
