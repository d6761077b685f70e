"""Activation memory of a deployed graph, from its tensors' lifetimes: each tensor is live from the
step that writes it to its last reader (`Buffer`), an op that may run in place extends its input's buffer
instead of taking a new one (`deployed_buffers`), `peak_of` is the most bytes live at once, and
`plan_arena` lays the buffers out in one arena with TFLite's own greedy-by-size best-fit planner
(Pisarchyk & Lee, "Efficient Memory Management for Deep Neural Net Inference", 2020;
tensorflow/lite/arena_planner.cc). `edgekd.analysis` reads the steps off a traced model.

Example:
    >>> from edgekd.arena import Buffer, peak_of, plan_arena
    >>> buffers = [Buffer(100, 0, 1), Buffer(100, 1, 2), Buffer(100, 2, 3)]  # a chain of three ops
    >>> peak_of(buffers), plan_arena(buffers, alignment=1)  # the first and third share their bytes
    (200, 200)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    out: str
    nbytes: int
    reads: tuple[str, ...]
    in_place: bool  # may write into its first input when it is that input's last reader
    scratch: int = 0  # bytes of intermediates live only while the op runs (a decomposed op)


@dataclass
class Buffer:
    """One tensor of the deployed graph: live from step `first` to step `last`, inclusive."""

    nbytes: int
    first: int
    last: int


def deployed_buffers(steps: list[Step], inputs: dict[str, int], outputs: list[str]) -> list[Buffer]:
    """Tensor lifetimes of the deployed graph; in-place ops extend their input's buffer instead of
    taking a new one. Inputs live from the start to the end, outputs from their step to the end."""
    end = len(steps)
    last_read: dict[str, int] = {}
    for i, step in enumerate(steps):
        for name in step.reads:
            last_read[name] = i
    buffers: dict[str, Buffer] = {name: Buffer(nbytes, 0, end) for name, nbytes in inputs.items()}
    owner: dict[str, str] = {name: name for name in inputs}
    for i, step in enumerate(steps):
        for name in step.reads:
            if name in owner:
                buffers[owner[name]].last = max(buffers[owner[name]].last, i)
        first = step.reads[0] if step.reads else None
        if (
            step.in_place
            and first in owner
            and first not in inputs
            and last_read.get(first) == i
            and buffers[owner[first]].nbytes == step.nbytes
        ):
            owner[step.out] = owner[first]
        else:
            owner[step.out] = step.out
            buffers[step.out] = Buffer(step.nbytes, i, i)
        if step.scratch:
            buffers[f"{step.out}.scratch"] = Buffer(step.scratch, i, i)
    for name in outputs:
        if name in owner:
            buffers[owner[name]].last = end
    return list(buffers.values())


def peak_of(buffers: list[Buffer]) -> int:
    events: dict[int, int] = {}
    for b in buffers:
        events[b.first] = events.get(b.first, 0) + b.nbytes
        events[b.last + 1] = events.get(b.last + 1, 0) - b.nbytes
    live = peak = 0
    for step in sorted(events):
        live += events[step]
        peak = max(peak, live)
    return peak


def plan_arena(buffers: list[Buffer], alignment: int = 64) -> int:
    """Lay buffers out in one arena the way TFLite's ArenaPlanner does: buffers live for the whole run
    first, then the rest largest first (ties: earlier first); each takes the best-fitting gap among the
    buffers whose lifetimes overlap its own. Returns the arena's size in bytes."""

    def align(offset: int) -> int:
        return -(-offset // alignment) * alignment

    whole_run = max((b.last for b in buffers), default=0)
    order = sorted(
        range(len(buffers)),
        key=lambda i: (
            not (buffers[i].first == 0 and buffers[i].last == whole_run),
            -buffers[i].nbytes,
            buffers[i].first,
        ),
    )
    placed: list[tuple[int, Buffer]] = []  # (offset, buffer), kept sorted by offset
    arena = 0
    for i in order:
        b = buffers[i]
        best, best_gap, current = None, None, 0
        for offset, other in placed:
            if other.last < b.first or other.first > b.last:
                continue
            start = align(current)
            if start + b.nbytes <= offset and (best_gap is None or offset - start < best_gap):
                best, best_gap = start, offset - start
            current = max(current, offset + other.nbytes)
        offset = best if best is not None else align(current)
        placed.append((offset, b))
        placed.sort(key=lambda item: item[0])
        arena = max(arena, offset + b.nbytes)
    return arena
