"""Communication volume per rank: closed-form formulas per block and strategy, and the same
quantity measured from a built network by walking its collective layers.

Accounting (NCCL's ring algorithms, the convention behind nccl-tests' bus bandwidth; ``n`` is
the group size, ``B`` the collective's input bytes on this rank, ranks ordered as in the
group, data flowing from group index ``i`` to ``i+1 mod n``):

============== ============================== ==============================================
collective     sent per rank                  received per rank
============== ============================== ==============================================
all_reduce     ``2(n-1)/n * B``               ``2(n-1)/n * B``
reduce_scatter ``(n-1)/n * B``                ``(n-1)/n * B``
all_gather     ``(n-1) * B`` (``(n-1)/n`` of  ``(n-1) * B`` (``(n-1)/n`` of the output)
               the output)
all_to_all     ``(n-1)/n * B``                ``(n-1)/n * B``
broadcast      ``B``, except the chain's last ``B``, except the root (a pipeline
               rank (``root-1``): 0           ``root -> root+1 -> ... -> root-1``): 0
reduce         ``B``, except the root: 0      ``B``, except the chain's first rank
                                              (``root+1``): 0
gather         ``B`` (root: 0)                root: ``(n-1) * B``; others 0
scatter        root: ``(n-1)/n * B``          ``B/n`` (root: 0)
============== ============================== ==============================================

A group of one moves nothing. Values are exact (``fractions.Fraction`` inside), reported as
floats.

>>> v = cp_attention_volume("ring", seq_len=1024, heads=8, head_dim=64, ranks=4,
...                         dtype="float16")
>>> v.received == 3 * 2 * 8 * 256 * 64 * 2           # N-1 blocks of packed K/V
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .. import dtypes
from ..errors import DefinitionError, user_location
from ..network import Network

Bytes = Fraction


@dataclass(frozen=True)
class CommVolume:
    """Bytes one rank sends and receives (per block), and the number of collectives."""

    sent: float
    received: float
    collectives: int

    def __add__(self, other: CommVolume) -> CommVolume:
        return CommVolume(
            self.sent + other.sent,
            self.received + other.received,
            self.collectives + other.collectives,
        )


@dataclass(frozen=True)
class CollectiveVolume:
    """One collective layer as measured: name, op, group size, input bytes, sent, received."""

    layer: str
    op: str
    n: int
    input_bytes: int
    sent: float
    received: float


@dataclass(frozen=True)
class CommReport:
    """The collectives of one rank's network and their totals."""

    network: str
    rank: int
    layers: list[CollectiveVolume] = field(default_factory=list)
    total: CommVolume = CommVolume(0.0, 0.0, 0)

    def __str__(self) -> str:
        lines = [f"comm volume of '{self.network}' on rank {self.rank}:"]
        for c in self.layers:
            lines.append(
                f"  {c.layer:<32} {c.op:<14} n={c.n:<3} in={c.input_bytes:>10} B  "
                f"sent={c.sent:>12.0f} B  recv={c.received:>12.0f} B"
            )
        t = self.total
        lines.append(
            f"  total: {t.collectives} collectives, sent {t.sent:.0f} B, "
            f"received {t.received:.0f} B"
        )
        return "\n".join(lines)


def _fail(message: str) -> DefinitionError:
    return DefinitionError(message, where=user_location())


def collective_volume(
    op: str, input_bytes: int, n: int, index: int, root: int | None = None
) -> tuple[Bytes, Bytes]:
    """(sent, received) bytes of group member ``index`` for one collective (table above).

    >>> [float(x) for x in collective_volume("all_gather", 100, 4, 0)]
    [300.0, 300.0]
    """
    b = Fraction(input_bytes)
    if n == 1:
        return Fraction(0), Fraction(0)
    if op == "all_reduce":
        v = 2 * (n - 1) * b / n
        return v, v
    if op in ("reduce_scatter", "all_to_all"):
        v = (n - 1) * b / n
        return v, v
    if op == "all_gather":
        v = (n - 1) * b
        return v, v
    if root is None:
        raise ValueError(f"{op} needs a root")
    if op == "broadcast":
        pos = (index - root) % n  # 0: root ... n-1: end of the pipeline
        return (b if pos < n - 1 else Fraction(0)), (b if pos > 0 else Fraction(0))
    if op == "reduce":
        pos = (index - root - 1) % n  # 0: start of the chain ... n-1: root
        return (b if pos < n - 1 else Fraction(0)), (b if pos > 0 else Fraction(0))
    if op == "gather":
        if index == root:
            return Fraction(0), (n - 1) * b
        return b, Fraction(0)
    if op == "scatter":
        if index == root:
            return (n - 1) * b / n, Fraction(0)
        return Fraction(0), b / n
    raise ValueError(f"unknown collective {op!r}")


def measure_comm_volume(network: Network) -> CommReport:
    """Walk ``network``'s collective layers (static shapes) and add up this rank's bytes.

    >>> print(measure_comm_volume(net))                                  # doctest: +SKIP
    """
    rank = network.rank or 0
    rows = []
    sent = recv = Fraction(0)
    for layer in network.collectives:
        spec = layer.spec
        ty = layer.input_types[0]
        numel = ty.numel()
        if numel is None:
            raise _fail(f"measure_comm_volume: collective '{layer.name}' has a dynamic shape {ty}")
        nbytes = numel * ty.dtype.itemsize
        s, r = collective_volume(spec.op, nbytes, spec.n, spec.group.index(rank), spec.root)
        sent, recv = sent + s, recv + r
        rows.append(CollectiveVolume(layer.name, spec.op, spec.n, nbytes, float(s), float(r)))
    total = CommVolume(float(sent), float(recv), len(rows))
    return CommReport(network.name, rank, rows, total)


# -- closed-form formulas, per rank and per block -------------------------------------------------


def _itemsize(dtype: Any) -> int:
    try:
        return dtypes.as_dtype(dtype).itemsize
    except ValueError as e:
        raise _fail(str(e)) from None


def _vol(sent: Bytes, received: Bytes, collectives: int) -> CommVolume:
    return CommVolume(float(sent), float(received), collectives)


def _check(ranks: int, **sizes: int) -> None:
    if not isinstance(ranks, int) or ranks < 1:
        raise _fail(f"ranks must be an int >= 1, got {ranks!r}")
    for k, v in sizes.items():
        if not isinstance(v, int) or v < 1:
            raise _fail(f"{k} must be an int >= 1, got {v!r}")


def column_parallel_linear_volume(
    *, tokens: int, out_features: int, ranks: int, dtype: Any, gather_output: bool = False
) -> CommVolume:
    """No communication, or with ``gather_output`` one all_gather of the ``[tokens, out/N]``
    output: ``(N-1)/N * tokens * out * b`` sent and received."""
    _check(ranks, tokens=tokens, out_features=out_features)
    if ranks == 1 or not gather_output:
        return _vol(Fraction(0), Fraction(0), 0)
    v = Fraction((ranks - 1) * tokens * out_features * _itemsize(dtype), ranks)
    return _vol(v, v, 1)


def row_parallel_linear_volume(
    *, tokens: int, out_features: int, ranks: int, dtype: Any, reduce: str = "all_reduce"
) -> CommVolume:
    """One all_reduce of ``[tokens, out]``: ``2(N-1)/N * tokens * out * b``; or one
    reduce_scatter: ``(N-1)/N * tokens * out * b`` (sent = received)."""
    _check(ranks, tokens=tokens, out_features=out_features)
    if ranks == 1:
        return _vol(Fraction(0), Fraction(0), 0)
    factor = {"all_reduce": 2, "reduce_scatter": 1}.get(reduce)
    if factor is None:
        raise _fail(f"reduce must be 'all_reduce' or 'reduce_scatter', got {reduce!r}")
    v = Fraction(factor * (ranks - 1) * tokens * out_features * _itemsize(dtype), ranks)
    return _vol(v, v, 1)


def tp_mlp_volume(
    *, tokens: int, d_model: int, ranks: int, dtype: Any, reduce: str = "all_reduce"
) -> CommVolume:
    """Tensor-parallel MLP: only the down projection's reduction, independent of the hidden
    size: ``2(N-1)/N * tokens * d_model * b`` (all_reduce)."""
    return row_parallel_linear_volume(
        tokens=tokens, out_features=d_model, ranks=ranks, dtype=dtype, reduce=reduce
    )


def tp_attention_volume(
    *, tokens: int, d_model: int, ranks: int, dtype: Any, reduce: str = "all_reduce"
) -> CommVolume:
    """Tensor-parallel attention: only the out-projection's reduction, as the MLP's."""
    return row_parallel_linear_volume(
        tokens=tokens, out_features=d_model, ranks=ranks, dtype=dtype, reduce=reduce
    )


CP_STRATEGIES = ("allgather_kv", "ring", "ulysses")


def cp_attention_volume(
    strategy: str,
    *,
    seq_len: int,
    heads: int,
    head_dim: int,
    ranks: int,
    dtype: Any,
    causal: bool = False,
) -> CommVolume:
    """Context-parallel attention over ``seq_len`` tokens (``s = seq_len/N`` per rank), per rank
    (the same on every rank; ``causal`` changes compute, not volume):

    - allgather_kv: one all_gather of packed K/V ``[2H, s, Dh]``: ``(N-1) * 2*H*s*Dh*b``.
    - ring: N broadcasts of packed K/V ``[2H, s, Dh]``: ``(N-1) * 2*H*s*Dh*b`` (a ring's).
    - ulysses: all_to_all of q, k and v ``[H, s, Dh]`` each and of the output ``[H, s, Dh]``
      (four collectives): ``(N-1)/N * 4*H*s*Dh*b``.
    """
    _check(ranks, seq_len=seq_len, heads=heads, head_dim=head_dim)
    if strategy not in CP_STRATEGIES:
        raise _fail(f"unknown context-parallel strategy {strategy!r}; expected {CP_STRATEGIES}")
    if seq_len % ranks:
        raise _fail(f"seq_len {seq_len} does not split over {ranks} ranks")
    if ranks == 1:
        return _vol(Fraction(0), Fraction(0), 0)
    b = _itemsize(dtype)
    s = seq_len // ranks
    if strategy == "allgather_kv":
        v = Fraction((ranks - 1) * 2 * heads * s * head_dim * b)
        return _vol(v, v, 1)
    if strategy == "ring":
        v = Fraction((ranks - 1) * 2 * heads * s * head_dim * b)
        return _vol(v, v, ranks)
    if heads % ranks:
        raise _fail(f"ulysses: {heads} heads do not split over {ranks} ranks")
    v = Fraction((ranks - 1) * 4 * heads * s * head_dim * b, ranks)
    return _vol(v, v, 4)


def volume_report(
    *,
    seq_lens: list[int],
    heads: int,
    head_dim: int,
    ranks: int,
    dtype: Any = "float16",
    batch: int = 1,
) -> list[dict[str, Any]]:
    """Rows ``{block, seq_len, ranks, sent, received, collectives}`` (bytes per rank) for the
    TP MLP and attention (``d_model = heads*head_dim``, ``tokens = batch*seq_len``) and the
    three CP strategies (per sequence of the batch, times ``batch``).

    >>> print(format_volume_report(volume_report(seq_lens=[4096], heads=32, head_dim=128,
    ...                                          ranks=8)))          # doctest: +SKIP
    """
    rows = []
    d_model = heads * head_dim
    for seq in seq_lens:
        blocks = {
            "tp_mlp": tp_mlp_volume(tokens=batch * seq, d_model=d_model, ranks=ranks, dtype=dtype),
            "tp_attention": tp_attention_volume(
                tokens=batch * seq, d_model=d_model, ranks=ranks, dtype=dtype
            ),
        }
        for st in CP_STRATEGIES:
            if st == "ulysses" and heads % ranks:
                continue
            v = cp_attention_volume(
                st, seq_len=seq, heads=heads, head_dim=head_dim, ranks=ranks, dtype=dtype
            )
            blocks[f"cp_{st}"] = CommVolume(v.sent * batch, v.received * batch, v.collectives)
        for name, v in blocks.items():
            rows.append(
                {
                    "block": name,
                    "seq_len": seq,
                    "ranks": ranks,
                    "sent": v.sent,
                    "received": v.received,
                    "collectives": v.collectives,
                }
            )
    return rows


def format_volume_report(rows: list[dict[str, Any]]) -> str:
    """A text table of :func:`volume_report` rows (MiB per rank)."""
    head = (
        f"{'block':<16} {'seq_len':>8} {'ranks':>5} {'sent MiB':>10} {'recv MiB':>10} {'colls':>5}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r['block']:<16} {r['seq_len']:>8} {r['ranks']:>5} {r['sent'] / 2**20:>10.3f} "
            f"{r['received'] / 2**20:>10.3f} {r['collectives']:>5}"
        )
    return "\n".join(out)


__all__ = [
    "CommVolume",
    "CollectiveVolume",
    "CommReport",
    "collective_volume",
    "measure_comm_volume",
    "column_parallel_linear_volume",
    "row_parallel_linear_volume",
    "tp_mlp_volume",
    "tp_attention_volume",
    "cp_attention_volume",
    "volume_report",
    "format_volume_report",
    "CP_STRATEGIES",
]
