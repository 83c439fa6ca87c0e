"""Every parallel block lowers to TensorRT 11 network calls: each rank's network goes through
the manifest-checked fake ``tensorrt`` module (argument names, enum members, properties checked
against the 11.4 bindings), as the contract tests of the core ops do."""

from __future__ import annotations

import numpy as np
import pytest

import trtdsl as td
from trtdsl import parallel as P

lowering = pytest.importorskip("trtdsl.backends.tensorrt.lowering")
fake = pytest.importorskip("trtdsl.testing.fake_tensorrt")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(("n", "rank"), [(1, 0), (2, 1), (4, 3)])
def test_every_block_lowers(n, rank, dtype):
    net = td.Network("blocks", world=td.StaticWorld(n, rank))
    x = net.input("x", (4, 8, 16), dtype)
    y = P.tensor_parallel_mlp(
        x, np.ones((16, 32)), np.ones((32, 16)), w_gate=np.ones((16, 32)), b_down=np.ones(16)
    )
    y = P.tensor_parallel_attention(
        y, np.ones((16, 48)), np.ones((16, 16)), num_heads=4, causal=True, b_qkv=np.ones(48)
    )
    y = P.column_parallel_linear(y, np.ones((16, 8)), gather_output=True)
    y = P.row_parallel_linear(y, np.ones((8, 16)), reduce="reduce_scatter", input_is_parallel=False)
    net.output(y, "y")
    q = net.input("q", (4, 8, 4), dtype)
    for strategy in sorted(P.STRATEGIES):
        for causal in (False, True):
            out = P.cp_attention(q, q, q, strategy=strategy, causal=causal)
            net.output(out, f"{strategy}_{causal}")
    lowering.lower_network(net, fake.make_fake_tensorrt())
