"""``run(net, feeds, **build_options)``: build this rank's engine (cached) and execute it.

Networks whose collectives span more than one rank need one process per rank
(``mpiexec -n N``, ``world=td.MPIWorld()``): each rank selects CUDA device
``rank % device_count``, builds its own engine, joins an NCCL communicator made over MPI
(:meth:`trtdsl.backends.nccl.Communicator.for_partition`) and attaches it to its execution context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import ExecutionError
from ...worlds import StaticWorld, ThreadWorld
from ..interpreter import check_feeds
from .build import validate_options
from .module import import_tensorrt


def needs_communicator(net: Any) -> bool:
    """True if some collective of ``net`` spans more than one rank (lowered as a real
    IDistCollectiveLayer, so the context needs an NCCL communicator)."""
    return any(layer.spec.n > 1 for layer in net.collectives)


def compile(net: Any, **options: Any) -> Any:  # noqa: A001 - the backend's verb
    """A session (:mod:`trtdsl.backends.session_trt`): the engine, context and communicator
    made once. Options: build options of :func:`build_engine` (``profiles`` is required for
    dynamic inputs) and ``check``."""
    from ..session_trt import TensorRTSession

    trt = import_tensorrt()  # first: a clear error on machines without TensorRT
    return TensorRTSession(net, trt=trt, **options)


def run(net: Any, feeds: Mapping[str, Any], **build_options: Any) -> dict[str, np.ndarray]:
    """Run ``net`` on TensorRT 11: ``{input name: array}`` -> ``{output name: array}``.

    ``build_options`` go to :func:`~trtdsl.backends.tensorrt.build_engine`; without
    ``profiles``, dynamic inputs get a profile fixed at the feeds' shapes. Collective call
    when the network has multi-rank collectives (compile + run + close of a session).
    """
    from ..session_trt import TensorRTSession

    trt = import_tensorrt()  # first: a clear error on machines without TensorRT
    checked = check_feeds(net, feeds, np.asarray)
    if build_options.get("profiles") is None:
        dynamic = {n: a.shape for n, a in checked.items() if not net.inputs[n].type.is_static}
        if dynamic:
            build_options["profiles"] = {n: list(s) for n, s in dynamic.items()}
    validate_options(net, **build_options)
    world = net.world
    if needs_communicator(net) and isinstance(world, (StaticWorld, ThreadWorld)):
        raise ExecutionError(
            f"network '{net.name}' has collectives over {world.size} ranks: the tensorrt "
            "backend needs one process per rank (mpiexec -n N, torchrun, srun: "
            "world=td.world_from_env()); "
            f"{type(world).__name__} cannot host NCCL communicators"
        )
    with TensorRTSession(net, trt=trt, **build_options) as session:
        return session.run(checked)
