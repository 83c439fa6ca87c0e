"""A small DiT end to end: patch embedding, N adaLN blocks with 2-D RoPE attention, final
layer and unpatchify, on a TP x CP grid of ranks, weights from a safetensors file, checked
against a float64 NumPy implementation of the whole model.

    python samples/dit_model.py --world-size 4 --tp 2 --cp 2            # simulated ranks
    python samples/dit_model.py --world-size 2 --fp8 --summary          # FP8 weights
    mpiexec -n 4 python samples/dit_model.py --tp 2 --cp 2              # one process a rank
    mpirun -np 4 python samples/dit_model.py --backend cupy --tp 2 --cp 2 --blocks 4

The model (DiT / FLUX-like, adaLN-Zero without the zero init)::

    tokens = patchify(latent, p) @ W_patch + b_patch                     [T, D]
    c      = silu(t_emb + embedding(label, E))                           [1, D_c]
    for each block: shift/scale/gate x 2 = split(c @ W_ada + b_ada, 6)
        x = x + gate1 * Attn(rope(q), rope(k), v) of LayerNorm(x) * (1 + scale1) + shift1
        x = x + gate2 * MLP(LayerNorm(x) * (1 + scale2) + shift2)
    out = unpatchify((LayerNorm(x) * (1 + scale) + shift) @ W_out + b_out)   [C, H, W]

RoPE is FLUX's: interleaved pairs, half of each head's pairs rotated by the patch row, half
by the patch column. Ranks form the grid of samples/dit_block.py (rank = cp_index * tp +
tp_index): attention heads and MLP hidden units are split over the tp-group, tokens over the
cp-group. Each rank reads only its slice of each split weight from the file (written, seeded,
on the first run). ``--fp8`` stores the linears' weights as FP8 E4M3 with per-column scales
(dequantized in the network); the reference then uses the same dequantized weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from _launch import add_common_args, finish, launch, world_size
from dit_block import EPS

import trtdsl as td
from trtdsl import functional as F
from trtdsl import parallel as P
from trtdsl.ops.position import rope_tables
from trtdsl.ops.quantize import quantize_array
from trtdsl.weights import Weights, save_weights

LINEARS = ("w_q", "w_k", "w_v", "w_o", "w_up", "w_down")  # FP8 with --fp8


def make_weights(cfg: argparse.Namespace) -> dict[str, np.ndarray]:
    """Seeded random weights of the whole model, by name, float32 ``[in, out]``."""
    rng = np.random.default_rng(cfg.seed)
    d, dc, f = cfg.heads * cfg.head_dim, cfg.d_cond, cfg.channels * cfg.patch**2

    def w(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale / np.sqrt(shape[0])).astype(np.float32)

    out = {"patch.w": w(f, d), "patch.b": w(d, scale=0.1), "label.embed": w(cfg.classes, dc)}
    for i in range(cfg.blocks):
        b = f"blocks.{i}."
        out.update({b + "w_ada": w(dc, 6 * d, scale=0.5), b + "b_ada": w(6 * d, scale=0.1)})
        out.update({b + n: w(d, d) for n in ("w_q", "w_k", "w_v", "w_o")})
        out.update({b + "b_o": w(d, scale=0.1), b + "w_up": w(d, 4 * d)})
        out.update({b + "b_up": w(4 * d, scale=0.1), b + "w_down": w(4 * d, d)})
        out[b + "b_down"] = w(d, scale=0.1)
    out.update({"final.w_ada": w(dc, 2 * d, scale=0.5), "final.b_ada": w(2 * d, scale=0.1)})
    out.update({"final.w": w(d, f), "final.b": w(f, scale=0.1)})
    return out


def weights_file(cfg: argparse.Namespace) -> Path:
    """The safetensors file (written atomically on the first run; every rank may try)."""
    if cfg.weights:
        path = Path(cfg.weights)
    else:
        key = f"{cfg.blocks}_{cfg.heads}_{cfg.head_dim}_{cfg.channels}_{cfg.patch}_{cfg.seed}"
        path = Path(tempfile.gettempdir()) / f"trtdsl_dit_model_{cfg.d_cond}_{key}.safetensors"
    if not path.is_file():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_weights(tmp, make_weights(cfg))
        os.replace(tmp, path)
    return path


def grid_positions(hp: int, wp: int) -> np.ndarray:
    """(row, column) of each patch token, row-major: ``[hp*wp, 2]``."""
    return np.stack(np.meshgrid(np.arange(hp), np.arange(wp), indexing="ij"), -1).reshape(-1, 2)


# -- the reference: the whole model in float64 NumPy on one rank ----------------------------
def reference(latent: np.ndarray, t_emb: np.ndarray, label: int, wt: dict, cfg) -> np.ndarray:
    wt = {k: v.astype(np.float64) for k, v in wt.items()}
    p, heads, dh = cfg.patch, cfg.heads, cfg.head_dim
    c_, h_, w_ = latent.shape
    hp, wp = h_ // p, w_ // p

    def ln(h):
        return (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + EPS)

    def gelu(h):
        return 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))

    def rope(t):  # [H, S, Dh], interleaved pairs; angles from the patch grid
        cos, sin = (a.astype(np.float64) for a in rope_tables(pos, dh, axes_dim=(dh // 2,) * 2))
        a, b = t[..., 0::2], t[..., 1::2]
        out = np.empty_like(t)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    pos = grid_positions(hp, wp)
    patches = latent.reshape(c_, hp, p, wp, p).transpose(1, 3, 0, 2, 4).reshape(hp * wp, -1)
    x = patches @ wt["patch.w"] + wt["patch.b"]
    c = t_emb + wt["label.embed"][[label]]
    c = c / (1 + np.exp(-c))
    for i in range(cfg.blocks):
        b = {k[len(f"blocks.{i}.") :]: v for k, v in wt.items() if k.startswith(f"blocks.{i}.")}
        sh1, sc1, g1, sh2, sc2, g2 = np.split(c @ b["w_ada"] + b["b_ada"], 6, axis=-1)
        h = ln(x) * (1 + sc1) + sh1
        q, k, v = (
            (h @ b[n]).reshape(len(x), heads, dh).transpose(1, 0, 2) for n in ("w_q", "w_k", "w_v")
        )
        q, k = rope(q), rope(k)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(dh)
        pr = np.exp(s - s.max(-1, keepdims=True))
        o = ((pr / pr.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(len(x), -1)
        x = x + g1 * (o @ b["w_o"] + b["b_o"])
        h = ln(x) * (1 + sc2) + sh2
        x = x + g2 * (gelu(h @ b["w_up"] + b["b_up"]) @ b["w_down"] + b["b_down"])
    shift, scale = np.split(c @ wt["final.w_ada"] + wt["final.b_ada"], 2, axis=-1)
    out = (ln(x) * (1 + scale) + shift) @ wt["final.w"] + wt["final.b"]
    return out.reshape(hp, wp, c_, p, p).transpose(2, 0, 3, 1, 4).reshape(c_, h_, w_)


def fp8_dequantized(wt: dict) -> dict:
    """The weights the FP8 model computes with: the linears quantized per column, back."""
    out = dict(wt)
    for k, v in wt.items():
        if k.rsplit(".", 1)[-1] in LINEARS:
            q, s = quantize_array(v, "float8_e4m3", axis=1)
            out[k] = (q.astype(np.float64) * s).astype(np.float32)
    return out


# -- what each rank builds -------------------------------------------------------------------
def dit_model(net: td.Network, wt: Weights, cfg, tp_groups: list, cp_groups: list) -> td.Tensor:
    tp, cp = len(tp_groups[0]), len(cp_groups[0])
    ci, ti = divmod(net.rank, tp)
    dh, p = cfg.head_dim, cfg.patch
    hp, wp = cfg.size // p, cfg.size // p
    s = hp * wp // cp  # this rank's tokens
    lh = cfg.heads // tp  # this rank's heads
    fp8 = "float8_e4m3" if cfg.fp8 else None

    def const(name: str, **kw) -> td.Tensor:
        return wt.constant(net, name, groups=tp_groups if "shard_axis" in kw else None, **kw)

    def column(h: td.Tensor, name: str, label: str, bias: str | None = None) -> td.Tensor:
        """This rank's output columns (heads, hidden units)."""
        b = None if bias is None else const(bias, shard_axis=-1)
        if fp8:  # per-column scales: a column shard's are the full weight's
            w = wt.get(name, shard_axis=-1, rank=ti, size=tp)
            kw = {"weight_dtype": fp8}
        else:
            w, kw = const(name, shard_axis=-1), {}
        return P.column_parallel_linear(
            h, w, b, sharded=True, groups=tp_groups, name=label, **kw
        )  # fmt: skip

    def row(h: td.Tensor, name: str, bias: str, label: str) -> td.Tensor:  # all_reduce in tp
        b = const(bias)
        if fp8:  # per-column scales over the full weight: load it whole, shard after
            w = wt.get(name)
            return P.row_parallel_linear(
                h, w, b, groups=tp_groups, weight_dtype=fp8, name=label
            )  # fmt: skip
        w = const(name, shard_axis=0)
        return P.row_parallel_linear(h, w, b, sharded=True, groups=tp_groups, name=label)

    def modulate(t: td.Tensor, shift: td.Tensor, scale: td.Tensor, name: str) -> td.Tensor:
        """LayerNorm(t) * (1 + scale) + shift: one layer (a Triton kernel on the cupy backend)."""
        return t.modulated_norm(shift, scale, kind="layer", eps=EPS, name=name)

    latent = net.input("latent", (cfg.channels, cfg.size, cfg.size))
    t_emb = net.input("t_emb", (1, cfg.d_cond))
    label = net.input("label", (1,), "int32")
    tokens = latent.patchify(p, name="patchify")[ci * s : (ci + 1) * s]  # my tokens
    x = F.matmul(tokens, const("patch.w"), name="patch.matmul") + const("patch.b")
    c = (t_emb + F.embedding(label, const("label.embed"), name="label.lookup")).silu(name="cond")

    pos = grid_positions(hp, wp)[ci * s : (ci + 1) * s]  # my tokens' (row, column)
    cos, sin = F.rope_frequencies(pos, dh, axes_dim=(dh // 2, dh // 2), net=net, name="rope")
    for i in range(cfg.blocks):
        b = f"blocks.{i}."
        mod = F.matmul(c, const(b + "w_ada"), name=b + "ada") + const(b + "b_ada")
        sh1, sc1, g1, sh2, sc2, g2 = mod.split(6, axis=-1, name=b + "ada.split")
        h = modulate(x, sh1, sc1, b + "norm1")
        qkv = []
        for n in ("q", "k", "v"):
            t = column(h, b + f"w_{n}", b + f"attn.{n}")
            t = t.reshape((0, lh, dh)).transpose((1, 0, 2))  # [H/tp, S/cp, Dh]
            if n != "v":
                t = t.rope(cos, sin, interleaved=True, name=b + f"attn.rope_{n}")
            qkv.append(t)
        o = P.cp_attention(*qkv, strategy=cfg.strategy, groups=cp_groups, name=b + "attn.cp")
        o = o.transpose((1, 0, 2)).reshape((0, lh * dh))
        x = x + g1 * row(o, b + "w_o", b + "b_o", b + "attn.out")
        h = modulate(x, sh2, sc2, b + "norm2")
        m = column(h, b + "w_up", b + "mlp.up", b + "b_up")
        m = m.gelu(approximate="tanh", name=b + "mlp.gelu")
        x = x + g2 * row(m, b + "w_down", b + "b_down", b + "mlp.down")

    fmod = F.matmul(c, const("final.w_ada"), name="final.ada") + const("final.b_ada")
    shift, scale = fmod.split(2, axis=-1, name="final.ada.split")
    y = F.matmul(modulate(x, shift, scale, "final.norm"), const("final.w"), name="final.linear")
    y = y + const("final.b")
    if cp > 1:  # every rank's tokens, in order, to rebuild the image
        y = y.all_gather(groups=cp_groups, name="final.gather_tokens")
    return y.unpatchify(p, (hp, wp), name="unpatchify")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel ranks (default W/cp)")
    p.add_argument("--cp", type=int, default=None, help="context-parallel ranks (default W/tp)")
    p.add_argument("--strategy", default="allgather_kv", choices=sorted(P.STRATEGIES))
    p.add_argument("--blocks", type=int, default=2, help="DiT blocks")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=8, help="a multiple of 4 (2-D RoPE)")
    p.add_argument("--channels", type=int, default=4, help="latent channels")
    p.add_argument("--size", type=int, default=8, help="latent height = width")
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--d-cond", type=int, default=16)
    p.add_argument("--classes", type=int, default=10, help="class labels (embedding rows)")
    p.add_argument("--fp8", action="store_true", help="FP8 E4M3 weights for the linears")
    p.add_argument("--weights", default=None, help="safetensors file (default: a temp file)")
    p.add_argument("--summary", action="store_true", help="print rank 0's layer table")
    p.add_argument("--dot", default=None, help="write rank 0's network as a DOT file")
    add_common_args(p)
    cfg = p.parse_args()

    w = world_size(cfg)
    tp = cfg.tp or (w // cfg.cp if cfg.cp else 1)
    cp = cfg.cp or w // tp
    tokens = (cfg.size // cfg.patch) ** 2
    if tp * cp != w:
        p.error(f"--tp {tp} x --cp {cp} must equal the world size {w}")
    if cfg.heads % tp or tokens % cp or cfg.head_dim % 4 or cfg.size % cfg.patch:
        p.error(f"need heads % tp == 0, tokens ({tokens}) % cp == 0, head_dim % 4 == 0")
    tp_groups = [[ci * tp + ti for ti in range(tp)] for ci in range(cp)]
    cp_groups = [[ci * tp + ti for ci in range(cp)] for ti in range(tp)]

    path = weights_file(cfg)
    wt = Weights(path)
    full = {k: wt.get(k) for k in wt.keys()}
    rng = np.random.default_rng(cfg.seed + 1)
    latent = rng.standard_normal((cfg.channels, cfg.size, cfg.size)).astype(np.float32)
    t_emb = rng.standard_normal((1, cfg.d_cond)).astype(np.float32)
    label = np.array([int(rng.integers(cfg.classes))], np.int32)
    want = reference(latent, t_emb, int(label[0]), fp8_dequantized(full) if cfg.fp8 else full, cfg)

    def per_rank(world: td.World) -> tuple[int, bool, str]:
        net = td.Network("dit_model", world=world)
        net.output(dit_model(net, wt, cfg, tp_groups, cp_groups), "image")
        if world.rank == 0:
            if cfg.summary:
                net.summary()
            if cfg.dot:
                Path(cfg.dot).write_text(net.to_dot())
        got = net.run({"latent": latent, "t_emb": t_emb, "label": label}, backend=cfg.backend)
        err = float(np.max(np.abs(got["image"] - want)))
        ok = err <= 2e-4 * max(1.0, float(np.max(np.abs(want))))
        ci, ti = divmod(world.rank, tp)
        return (
            world.rank,
            ok,
            f"rank {world.rank} (tp {ti}/{tp}, cp {ci}/{cp}): image {got['image'].shape}, "
            f"{len(net.layers)} layers, max |error| vs float64 {err:.1e} "
            f"{'PASS' if ok else 'FAIL'}",
        )

    results = launch(cfg, per_rank)
    what = (
        f"DiT model ({cfg.blocks} blocks, tp={tp}, cp={cp}, {cfg.strategy}"
        f"{', fp8 weights' if cfg.fp8 else ''}; weights {path.name})"
    )
    return finish(results, what, cfg.backend)


if __name__ == "__main__":
    sys.exit(main())
