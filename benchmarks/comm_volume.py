"""Per-rank communication volume of every parallel block and CP strategy (formulas), checked
against the volume measured from real networks built for one rank, printed as a table.

    python benchmarks/comm_volume.py [--heads 24 --head-dim 128 --ranks 2,4,8]

Runs on the CPU in seconds: the networks are only defined (StaticWorld), never executed.
"""

from __future__ import annotations

import argparse
import sys

import trtdsl as td
from trtdsl import parallel as P


def measured_cp(strategy: str, seq: int, heads: int, head_dim: int, ranks: int) -> float:
    """Bytes received by rank 0 in a network holding one CP attention block."""
    net = td.Network("cp", world=td.StaticWorld(ranks, 0))
    shape = (heads, seq // ranks, head_dim)
    q, k, v = (net.input(n, shape, "float16") for n in "qkv")
    net.output(P.cp_attention(q, k, v, strategy=strategy), "o")
    return P.measure_comm_volume(net).total.received


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--ranks", default="2,4,8")
    ap.add_argument("--seqs", default="8192,32768,131072")
    args = ap.parse_args()
    seqs = [int(s) for s in args.seqs.split(",")]
    bad = 0
    for ranks in (int(r) for r in args.ranks.split(",")):
        rows = P.volume_report(
            seq_lens=seqs, heads=args.heads, head_dim=args.head_dim, ranks=ranks, dtype="float16"
        )
        print(f"\n{ranks} ranks, {args.heads} heads x {args.head_dim}, float16, per rank:")
        print(P.format_volume_report(rows))
        for row in rows:  # the CP formulas must match the networks the blocks build
            if not row["block"].startswith("cp_"):
                continue
            got = measured_cp(row["block"][3:], row["seq_len"], args.heads, args.head_dim, ranks)
            if abs(got - row["received"]) > 0.5:
                bad += 1
                print(
                    f"MISMATCH {row['block']} S={row['seq_len']}: formula {row['received']}"
                    f" vs measured {got}"
                )
    print(f"\nformula vs measured network: {'all equal' if not bad else f'{bad} differ'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
