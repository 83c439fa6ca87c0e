"""Running a recorded network: feeds in, named outputs out, one layer evaluator per class."""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import collectives, movement, plugins, pointwise, quantization, reductions
from .collectives import Communicator
from .graph import (
    EmulatorError,
    LayerView,
    UnsupportedLayerError,
    evaluation_order,
    layer_outputs,
    numpy_type,
)

Evaluator = Callable[[LayerView, list[Any], "NetworkRun"], list[np.ndarray]]

#: Layer class -> evaluator. Anything else is an :class:`UnsupportedLayerError`.
EVALUATORS: dict[str, Evaluator] = {
    "IElementWiseLayer": pointwise.elementwise,
    "IUnaryLayer": pointwise.unary,
    "IActivationLayer": pointwise.activation,
    "ISelectLayer": pointwise.select,
    "ICastLayer": pointwise.cast,
    "IIdentityLayer": pointwise.identity,
    "IConstantLayer": movement.constant,
    "IShapeLayer": movement.shape,
    "IShuffleLayer": movement.shuffle,
    "ISliceLayer": movement.slice_,
    "IConcatenationLayer": movement.concatenation,
    "IGatherLayer": movement.gather,
    "IMatrixMultiplyLayer": reductions.matrix_multiply,
    "ISoftMaxLayer": reductions.softmax,
    "IReduceLayer": reductions.reduce,
    "INormalizationLayer": reductions.normalization,
    "IAttention": reductions.attention,
    "IDistCollectiveLayer": collectives.dist_collective,
    "IQuantizeLayer": quantization.quantize,
    "IDequantizeLayer": quantization.dequantize,
    "ITopKLayer": quantization.topk,
    "IPluginV3Layer": plugins.plugin,
}

#: Inputs a layer may leave unset (None) at these indices (dynamic slice parameters).
_OPTIONAL_INPUTS = {"ISliceLayer": {1, 2, 3, 4, 5}, "IQuantizeLayer": {2}, "IDequantizeLayer": {2}}


class NetworkRun:
    """One evaluation of a recorded network on one rank."""

    def __init__(self, network: Any, rank: int = 0, comm: Communicator | None = None) -> None:
        if "created" not in getattr(network, "__dict__", {}):
            raise EmulatorError("not a network recorded by the fake tensorrt module")
        self.network = network
        self.rank = rank
        self.comm = comm
        self.values: dict[int, np.ndarray] = {}
        self.order, self.producer = evaluation_order(network)

    def value(self, tensor: Any) -> np.ndarray:
        """The computed value of an ITensor of this network."""
        try:
            return self.values[id(tensor)]
        except KeyError:
            raise EmulatorError(f"tensor {_tname(tensor)!r} has no value yet") from None

    def _feed(self, feeds: Mapping[str, Any]) -> None:
        names = []
        for t in self.network.inputs:
            args = t.origin[2]
            name, want = args["name"], numpy_type(args["dtype"])
            shape = tuple(operator.index(d) for d in args["shape"])
            names.append(name)
            if name not in feeds:
                raise EmulatorError(f"no feed for network input {name!r}")
            x = np.asarray(feeds[name])
            if x.dtype != want:
                raise EmulatorError(f"input {name!r}: fed {x.dtype}, the network has {want}")
            if x.ndim != len(shape) or any(d not in (-1, g) for d, g in zip(shape, x.shape)):
                raise EmulatorError(f"input {name!r}: fed shape {x.shape}, declared {shape}")
            self.values[id(t)] = x
        extra = sorted(set(feeds) - set(names))
        if extra:
            raise EmulatorError(f"feeds for unknown inputs {extra} (inputs: {names})")

    def _check_tensor_sets(self, t: Any) -> None:
        odd = [n for n, _ in t.sets if n != "name"]
        if odd:
            raise UnsupportedLayerError(
                f"tensor {_tname(t)!r}: property {', '.join(odd)} set; the emulator models none"
            )

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Evaluate every layer; returns the marked outputs by name."""
        self._feed(feeds)
        for v in self.order:
            fn = EVALUATORS.get(v.cls)
            if fn is None:
                raise UnsupportedLayerError(
                    f"{v.where()}: layer type {v.cls} is not modelled by the emulator "
                    f"(modelled: {', '.join(sorted(EVALUATORS))})"
                )
            optional = _OPTIONAL_INPUTS.get(v.cls, set())
            ins = []
            for i, t in enumerate(v.inputs):
                if t is None:
                    if i not in optional:
                        raise v.fail(f"input {i} is not set")
                    ins.append(None)
                    continue
                self._check_tensor_sets(t)
                ins.append(self.value(t))
            if any(x is None for x in ins[:1]):
                raise v.fail("input 0 is not set")
            outs = fn(v, ins, self)
            for i, t in layer_outputs(v.obj).items():
                if i >= len(outs):
                    raise v.fail(f"output {i} was used, the layer has {len(outs)}")
                self.values[id(t)] = outs[i]
        result = {}
        for t in self.network.outputs:
            self._check_tensor_sets(t)
            name = t._props.get("name")
            if not name:
                raise EmulatorError("a network output has no name")
            if name in result:
                raise EmulatorError(f"two network outputs are named {name!r}")
            result[name] = self.value(t)
        return result


def _tname(t: Any) -> str | None:
    return t.__dict__.get("_props", {}).get("name")


def run_network(
    network: Any, feeds: Mapping[str, Any], *, rank: int = 0, comm: Communicator | None = None
) -> dict[str, np.ndarray]:
    """Evaluate a network recorded by the fake ``tensorrt`` module with NumPy.

    ``rank``/``comm``: this rank and the :class:`Communicator` shared by the ranks' threads
    (needed only for collectives over more than one rank).
    """
    return NetworkRun(network, rank, comm).run(feeds)


def run_ranks(
    networks: Sequence[Any], feeds: Sequence[Mapping[str, Any]], timeout: float = 30.0
) -> list[dict[str, np.ndarray]]:
    """Evaluate one recorded network per rank, in threads sharing a :class:`Communicator`;
    the first rank's error is re-raised (the others are woken up with an error)."""
    n = len(networks)
    if len(feeds) != n:
        raise ValueError(f"{n} networks but {len(feeds)} feeds")
    comm = Communicator(n, timeout)
    results: list[Any] = [None] * n
    errors: list[tuple[int, BaseException]] = []

    def target(rank: int) -> None:
        try:
            results[rank] = run_network(networks[rank], feeds[rank], rank=rank, comm=comm)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append((rank, e))
            comm.abort(f"rank {rank}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=target, args=(r,), daemon=True) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        first = next((e for e in errors if "another rank failed" not in str(e[1])), errors[0])
        raise first[1]
    return results
