#!/usr/bin/env bash
# Runs one MPI rank of a job whose ranks share GPUs (more ranks than GPUs: a one-GPU machine):
#   mpirun -np 4 bash gpu/shared_rank.sh python3 gpu/check_ring.py
# NCCL refuses two ranks on one GPU of one host ("Duplicate GPU detected": same host hash, same
# bus id), so each rank gets a host id of its own (NCCL_HOSTID): NCCL then sees 4 hosts and moves
# data over its socket transport on the loopback interface. For correctness checks only: the
# ranks time-slice one GPU and every byte goes through host sockets, so nothing here is a speed.
set -euo pipefail
rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${SLURM_PROCID:-}}}
if [ -z "$rank" ]; then
    echo "shared_rank.sh: no MPI rank in the environment (run it under mpirun)" >&2
    exit 2
fi
export NCCL_HOSTID="trtdsl-shared-gpu-rank-$rank" NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo}
export NCCL_IB_DISABLE=1 NCCL_NVLS_ENABLE=0
exec "$@"
