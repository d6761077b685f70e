"""Load and run an exported artifact in its real runtime. A session is built once; `invoke` runs the
prepared input and is what the timing protocol measures.

Example:
    >>> # session = open_session(artifact, threads=2)
    >>> # logits = session.predict(images_in_artifact_layout)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgekd._registry import Registry

if TYPE_CHECKING:
    from edgekd.export import Artifact


class Session(Protocol):
    runtime: str
    version: str
    threads: int

    def set_input(self, sample: np.ndarray) -> None:
        """One sample with a batch dimension of 1, in the artifact's layout."""

    def invoke(self) -> None: ...

    def output(self) -> np.ndarray: ...


RUNTIMES: Registry[type] = Registry("runtime")


@RUNTIMES.register("litert")
class LiteRTSession:
    """ai-edge-litert's Interpreter (XNNPACK on CPU)."""

    runtime = "litert"

    def __init__(self, path: str, threads: int) -> None:
        from importlib.metadata import version

        from ai_edge_litert.interpreter import Interpreter

        self.threads = threads
        self.version = version("ai-edge-litert")
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def set_input(self, sample: np.ndarray) -> None:
        self._interpreter.set_tensor(self._input["index"], sample.astype(self._input["dtype"], copy=False))

    def invoke(self) -> None:
        self._interpreter.invoke()

    def output(self) -> np.ndarray:
        return self._interpreter.get_tensor(self._output["index"]).copy()


def open_session(artifact: Artifact, threads: int = 1) -> Session:
    from edgekd.export import FORMATS

    return RUNTIMES.get(FORMATS.get(artifact.format).runtime)(str(artifact.path), threads)


def predict(session: Session, samples: np.ndarray) -> np.ndarray:
    """Run samples (N, ...) one at a time through a batch-1 session; return stacked outputs."""
    outputs = []
    for sample in samples:
        session.set_input(sample[None])
        session.invoke()
        outputs.append(session.output()[0])
    return np.stack(outputs)


def to_layout(images_nchw: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(images_nchw.transpose(0, 2, 3, 1)) if layout == "NHWC" else images_nchw
