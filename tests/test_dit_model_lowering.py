"""samples/dit_model.py's per-rank networks (TP x CP, FP8 weights) lowered through the
manifest-checked fake tensorrt and run by the TensorRT emulator across ranks: the lowered
model gives the numpy backend's image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

import trtdsl as td
from trtdsl.backends.tensorrt import lower_network
from trtdsl.testing.fake_tensorrt import make_fake_tensorrt
from trtdsl.testing.trt_emulator import run_ranks
from trtdsl.weights import Weights

pytest.importorskip("safetensors")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples"))
import dit_model  # noqa: E402


@pytest.mark.parametrize("tp,cp,fp8", [(2, 2, False), (2, 1, True)])
def test_dit_model_lowered_matches_numpy(tmp_path, tp, cp, fp8):
    cfg = argparse.Namespace(
        blocks=1, heads=4, head_dim=8, channels=4, size=8, patch=2, d_cond=16, classes=10,
        seed=0, fp8=fp8, strategy="allgather_kv", weights=str(tmp_path / "w.safetensors"),
    )  # fmt: skip
    wt = Weights(dit_model.weights_file(cfg))
    n = tp * cp
    tp_groups = [[ci * tp + ti for ti in range(tp)] for ci in range(cp)]
    cp_groups = [[ci * tp + ti for ci in range(cp)] for ti in range(tp)]
    rng = np.random.default_rng(5)
    feeds = {
        "latent": rng.standard_normal((4, 8, 8)).astype(np.float32),
        "t_emb": rng.standard_normal((1, 16)).astype(np.float32),
        "label": np.array([3], np.int32),
    }
    trt = make_fake_tensorrt()
    nets, lowered = [], []
    for r in range(n):
        net = td.Network("dit", world=td.StaticWorld(n, r))
        net.output(dit_model.dit_model(net, wt, cfg, tp_groups, cp_groups), "image")
        nets.append(net)
        lowered.append(lower_network(net, trt))
    got = run_ranks([lw[1] for lw in lowered], [feeds] * n)

    def rank_fn(world):
        net = td.Network("dit", world=world)
        net.output(dit_model.dit_model(net, wt, cfg, tp_groups, cp_groups), "image")
        return net.run(feeds)["image"]

    want = td.InProcessWorld(n).run(rank_fn)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["image"], w, rtol=2e-5, atol=2e-5)
