"""An executable TensorRT emulator for networks recorded by the fake ``tensorrt`` module.

A second, independent implementation of what each lowered layer computes (it imports nothing
from ``trtdsl.ops`` or the numpy backend): :func:`run_network` walks the layers a lowering
created on the fake ``INetworkDefinition`` and evaluates each with NumPy following TensorRT's
documented semantics for its type and properties; :func:`run_ranks` (or one
:class:`Communicator` shared by per-rank threads) runs ``IDistCollectiveLayer`` across
in-process ranks. Layer types, properties or modes it does not model raise
:class:`UnsupportedLayerError`, never pass silently.

>>> import numpy as np, trtdsl as td
>>> from trtdsl.backends.tensorrt import lower_network
>>> from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
>>> net = td.Network("n")
>>> _ = net.output(net.input("x", (2,)).relu(), "y")
>>> _, network, ctx = lower_network(net, make_fake_tensorrt())
>>> run_network(network, {"x": np.array([-1.0, 2.0], np.float32)})["y"].tolist()
[0.0, 2.0]
"""

from .collectives import Communicator
from .evaluator import EVALUATORS, NetworkRun, run_network, run_ranks
from .graph import EmulatorError, UnsupportedLayerError

__all__ = [
    "Communicator",
    "EVALUATORS",
    "EmulatorError",
    "NetworkRun",
    "UnsupportedLayerError",
    "run_network",
    "run_ranks",
]
