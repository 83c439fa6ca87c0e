"""The TensorRT backend's session: engine, execution context, communicator, buffers, made once.

``Network.compile(backend="tensorrt", profiles=..., cache_dir=..., ...)`` builds this rank's
engine (or loads it from the per-process / per-rank ``cache_dir`` cache), creates one execution
context whose optimization profiles cover the declared dynamic ranges (``profiles=``, required
for dynamic inputs), makes the NCCL communicator once (unique id exchanged through the world,
timed and failure-aware) and calls ``set_communicator`` once. ``run`` then sets shapes, copies
feeds into device buffers kept across calls (reallocated only when a size changes), executes
and copies the outputs back.
"""

from __future__ import annotations

from typing import Any

from ..errors import ExecutionError
from .session import Session, agree_once


def multi_rank(net: Any) -> bool:
    """True if some collective of ``net`` spans more than one rank."""
    return any(layer.spec.n > 1 for layer in net.collectives)


class TensorRTSession(Session):
    backend = "tensorrt"

    def __init__(
        self, network: Any, check: str = "once", trt: Any = None, **build_options: Any
    ) -> None:
        super().__init__(network, check)
        from .tensorrt.build import build_engine, validate_options
        from .tensorrt.module import import_tensorrt

        validate_options(network, **build_options)  # profiles cover the dynamic inputs
        trt = trt if trt is not None else import_tensorrt()
        from .tensorrt.runtime import Engine, select_device

        world = network.world
        self.communicator = None
        self.engine = None
        comm_needed = multi_rank(network)
        if comm_needed and not hasattr(world, "exchange"):
            raise ExecutionError(f"network '{network.name}' has collectives but no world")
        if world is not None and world.size > 1:
            agree_once(network)  # a mismatch fails here, not in NCCL
            if comm_needed or getattr(world, "comm", None) is not None:
                local = getattr(world, "local_rank", None)  # the GPU of this node's rank
                select_device(world.rank if local is None else local)
        plan = build_engine(network, **build_options)
        try:
            if comm_needed:
                from .nccl import Communicator

                self.communicator = Communicator.for_partition(world)
            self.engine = Engine(plan, communicator=self.communicator, trt=trt)
        except BaseException:
            if self.communicator is not None:
                self.communicator.abort()  # do not wait for ranks that may never get here
            raise

    def _asarray(self, x: Any) -> Any:
        import numpy as np

        return np.asarray(x)

    def _execute(self, feeds: dict, first: bool) -> dict:
        try:
            outs = self.engine.run(feeds)
        except BaseException:
            if self.communicator is not None:
                self.close_on_error()
            raise
        return {name: outs[name] for name in self.network.outputs}

    def close_on_error(self) -> None:
        self.closed = True
        try:
            if self.engine is not None:
                self.engine.close()
        finally:
            if self.communicator is not None:
                self.communicator.abort()

    def _release(self) -> None:
        try:
            if self.engine is not None:
                self.engine.close()
        finally:
            if self.communicator is not None:
                self.communicator.close()  # after the engine: TensorRT needs it until then
