"""Parallel blocks built from the public DSL (ops + the eight collectives), so that they lower
to TensorRT 11 like any other network: tensor-parallel linear layers, MLP and attention,
context-parallel attention (all-gather K/V, ring from broadcasts, Ulysses), weight-sharding
helpers and communication-volume accounting. See docs/parallelism.md.

Each rank builds its own network (one engine per rank), so blocks slice full weights with the
network's world (rank, size) at definition time.

>>> import numpy as np, trtdsl as td
>>> from trtdsl import parallel as P
>>> def rank_fn(world):
...     net = td.Network("block", world=world)
...     x = net.input("x", (4, 8))
...     y = P.tensor_parallel_mlp(x, np.ones((8, 16)), np.ones((16, 8)))
...     return P.measure_comm_volume(net).total.collectives
>>> td.InProcessWorld(2).run(rank_fn)
[1, 1]
"""

from .attention import (
    causal_allowed,
    causal_mask,
    mask_value,
    scaled_dot_product_attention,
    tensor_parallel_attention,
)
from .comm_volume import (
    CollectiveVolume,
    CommReport,
    CommVolume,
    collective_volume,
    column_parallel_linear_volume,
    cp_attention_volume,
    format_volume_report,
    measure_comm_volume,
    row_parallel_linear_volume,
    tp_attention_volume,
    tp_mlp_volume,
    volume_report,
)
from .context_parallel import (
    STRATEGIES,
    AllGatherKVAttention,
    ContextParallelAttention,
    RingAttention,
    UlyssesAttention,
    cp_attention,
    get_strategy,
)
from .linear import column_parallel_linear, gather_features, row_parallel_linear
from .mlp import tensor_parallel_mlp
from .sharding import (
    LAYOUTS,
    sequence_segments,
    shard,
    shard_columns,
    shard_heads,
    shard_rows,
    shard_sequence,
    unshard,
)

__all__ = [
    "shard",
    "shard_columns",
    "shard_rows",
    "shard_heads",
    "shard_sequence",
    "sequence_segments",
    "LAYOUTS",
    "unshard",
    "column_parallel_linear",
    "row_parallel_linear",
    "gather_features",
    "tensor_parallel_mlp",
    "scaled_dot_product_attention",
    "tensor_parallel_attention",
    "causal_allowed",
    "causal_mask",
    "mask_value",
    "ContextParallelAttention",
    "AllGatherKVAttention",
    "RingAttention",
    "UlyssesAttention",
    "STRATEGIES",
    "get_strategy",
    "cp_attention",
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
]
