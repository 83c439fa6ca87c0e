"""``kernels/launch.py``'s streams: every form a caller may pass (a raw handle, a CuPy stream,
a cuda.core Stream, any ``__cuda_stream__`` object) reaches ``cuda.core.launch`` as a cuda.core
``Stream`` borrowing that handle (the stream protocol for foreign objects is deprecated there),
made once per handle; a cuda.core without ``Stream.from_handle`` gets the protocol object.
Wrapping a handle makes no CUDA call, so this runs without a GPU."""

from __future__ import annotations

import types

import pytest

cc = pytest.importorskip("cuda.core")
from trtdsl.kernels import launch as L  # noqa: E402
from trtdsl.kernels.errors import KernelLaunchError  # noqa: E402


def _handle(s) -> int:
    return int(s.__cuda_stream__()[1])


class _Protocol:
    def __init__(self, h: int) -> None:
        self.h = h

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.h)


class _CupyLike:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


@pytest.fixture(autouse=True)
def fresh_cache():
    L._streams.clear()
    yield
    L._streams.clear()


@pytest.mark.parametrize("make", [int, _Protocol, _CupyLike], ids=["int", "protocol", "cupy"])
def test_every_form_becomes_a_core_stream_of_that_handle(make) -> None:
    for h in (0x1000, 0x7F00DEAD0000, 1):
        s = L.as_stream(make(h))
        assert isinstance(s, cc.Stream) and _handle(s) == h


def test_a_core_stream_passes_as_is_and_handles_are_wrapped_once() -> None:
    s = cc.Stream.from_handle(0x2000)
    assert L.as_stream(s) is s
    a, b = L.as_stream(0x3000), L.as_stream(_CupyLike(0x3000))
    assert a is b and _handle(a) == 0x3000
    assert L.as_stream(0x3001) is not a


def test_the_cache_stays_bounded_and_right() -> None:
    n = L._STREAMS_KEPT * 2 + 7
    got = [_handle(L.as_stream(0x10000 + i)) for i in range(n)]
    assert got == [0x10000 + i for i in range(n)]
    assert 0 < len(L._streams) <= L._STREAMS_KEPT


@pytest.mark.parametrize("junk", ["stream", 1.5, object(), [3]])
def test_other_objects_are_refused(junk) -> None:
    with pytest.raises(KernelLaunchError, match="as a CUDA stream"):
        L.as_stream(junk)


def test_without_from_handle_the_protocol_object_is_passed(monkeypatch) -> None:
    monkeypatch.setattr(L, "cuda_core", lambda: types.SimpleNamespace())
    s = L.as_stream(0x4000)
    assert not isinstance(s, cc.Stream) and _handle(s) == 0x4000
    assert not L._streams
