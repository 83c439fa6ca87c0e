"""``run(net, feeds, **build_options)``: build this rank's engine (cached) and execute it.

Networks whose collectives span more than one rank need one process per rank
(``mpiexec -n N``, ``world=td.MPIWorld()``): each rank selects CUDA device
``rank % device_count``, builds its own engine, joins an NCCL communicator made over MPI
(:meth:`trtdsl.backends.nccl.Communicator.from_mpi`) and attaches it to its execution context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import ExecutionError
from ..interpreter import check_feeds
from .build import build_engine, validate_options
from .module import import_tensorrt


def needs_communicator(net: Any) -> bool:
    """True if some collective of ``net`` spans more than one rank (lowered as a real
    IDistCollectiveLayer, so the context needs an NCCL communicator)."""
    return any(layer.spec.n > 1 for layer in net.collectives)


def run(net: Any, feeds: Mapping[str, Any], **build_options: Any) -> dict[str, np.ndarray]:
    """Run ``net`` on TensorRT 11: ``{input name: array}`` -> ``{output name: array}``.

    ``build_options`` go to :func:`~trtdsl.backends.tensorrt.build_engine`; without
    ``profiles``, dynamic inputs get a profile fixed at the feeds' shapes. Collective call
    when the network has multi-rank collectives.
    """
    trt = import_tensorrt()  # first: a clear error on machines without TensorRT
    checked = check_feeds(net, feeds, np.asarray)
    if build_options.get("profiles") is None:
        dynamic = {n: a.shape for n, a in checked.items() if not net.inputs[n].type.is_static}
        if dynamic:
            build_options["profiles"] = {n: list(s) for n, s in dynamic.items()}
    validate_options(net, **build_options)
    comm_needed = needs_communicator(net)
    world = net.world
    from .runtime import Engine, select_device

    if comm_needed:
        if getattr(world, "comm", None) is None:
            raise ExecutionError(
                f"network '{net.name}' has collectives over {world.size} ranks: the tensorrt "
                "backend needs one process per rank (mpiexec -n N, world=td.MPIWorld()); "
                f"{type(world).__name__} cannot host NCCL communicators"
            )
        world.agree(net.collective_fingerprint())  # a mismatch fails here, not in NCCL
        select_device(world.rank)
    elif world is not None and world.size > 1 and getattr(world, "comm", None) is not None:
        select_device(world.rank)
    plan = build_engine(net, **build_options)
    comm = None
    if comm_needed:
        from ..nccl import Communicator

        comm = Communicator.from_mpi(world.comm)
    try:
        with Engine(plan, communicator=comm, trt=trt) as engine:
            outputs = engine.run(checked)
    except BaseException:
        if comm is not None:
            comm.abort()  # do not wait for ranks that may never get here
        raise
    if comm is not None:
        comm.close()  # after the engine: TensorRT needs it for the context's whole life
    return {name: outputs[name] for name in net.outputs}
