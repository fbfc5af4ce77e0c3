"""PyTorch side of bench/ops_tdrl.lua: the same workloads under the same names, one JSON line each
(value = median seconds). Run with Debian's torch: /usr/bin/python3 bench/ops_torch.py [min_seconds].

Settings, all made before torch is imported (bench/torch_env.py): TDRL_NUM_THREADS threads
(default all cores) for OpenMP, OpenBLAS and torch; the OpenMP setting TDRL_PEER_OMP names
(bench/run.lua runs each and takes the fastest per row); and the OpenBLAS core bench/run.lua
hands over in OPENBLAS_CORETYPE, tdrl's own (PyTorch's matmuls, hence the GRU and attention rows,
go through OpenBLAS; its convolutions go through oneDNN and are not affected).
TDRL_BENCH_CLOCK=cpu: CPU time instead of wall time (see bench/ops_tdrl.lua).
"""
import json
import os
import statistics
import sys
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_env import n_threads, torch  # noqa: E402  (threads, wait policy, BLAS core)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
torch.manual_seed(0)
MIN_TIME = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
clock = time.process_time if os.environ.get("TDRL_BENCH_CLOCK") == "cpu" else time.perf_counter


def timed(fn):
    for _ in range(3):
        fn()
    times, total = [], 0.0
    while len(times) < 7 or total < MIN_TIME:
        t0 = clock()
        fn()
        dt = clock() - t0
        times.append(dt)
        total += dt
    return statistics.median(times), len(times)


def emit(name, fn, flop=None):
    t, n = timed(fn)
    row = {"name": name, "value": t, "unit": "s", "higher": False, "n": n}
    if flop:
        row["gflops"] = flop / t / 1e9
    print(json.dumps(row), flush=True)


def leaf(*shape):
    return torch.randn(*shape).requires_grad_(True)


def clear(*ts):
    for t in ts:
        t.grad = None


# ---- conv2d 3x3, padding 1 ----------------------------------------------------------------------------------
for (B, C, H, W, O) in [(100, 16, 32, 32, 16), (100, 32, 16, 16, 32), (100, 64, 16, 16, 64)]:
    x, w, b = leaf(B, C, H, W), leaf(O, C, 3, 3), leaf(O)
    gy = torch.randn(B, O, H, W)
    fl = 2 * B * O * H * W * C * 9
    tag = f"conv2d 3x3 ({B},{C},{H},{W})->{O}"

    def fwd():
        with torch.no_grad():
            F.conv2d(x, w, b, padding=1)

    def fwdbwd():
        F.conv2d(x, w, b, padding=1).backward(gy)
        clear(x, w, b)
    emit(tag + " fwd", fwd, fl)
    emit(tag + " fwd+bwd", fwdbwd, 3 * fl)

# ---- GroupNorm(8 groups, 32 channels), eps 1e-6, affine -------------------------------------------------------
x, g, bb = leaf(100, 32, 16, 16), leaf(32), leaf(32)
gy = torch.randn(100, 32, 16, 16)


def gn():
    F.group_norm(x, 8, g, bb, 1e-6).backward(gy)
    clear(x, g, bb)


def gn_silu():
    F.silu(F.group_norm(x, 8, g, bb, 1e-6)).backward(gy)
    clear(x, g, bb)


emit("group_norm (8 groups) (100,32,16,16) fwd+bwd", gn)
emit("group_norm+silu (8 groups) (100,32,16,16) fwd+bwd", gn_silu)

# ---- attention: 11 tokens, B 256, 4 heads of 64 (as nn.MultiheadAttention computes it in torch 1.13) ----------
B, H, L, D = 256, 4, 11, 64
q, k, v = leaf(B, H, L, D), leaf(B, H, L, D), leaf(B, H, L, D)
gy = torch.randn(B, H, L, D)
fl = 2 * 2 * B * H * L * L * D


def attention():
    w_ = torch.softmax((q @ k.transpose(-1, -2)) * D ** -0.5, -1)
    return w_ @ v


def att_fwd():
    with torch.no_grad():
        attention()


def att_fwdbwd():
    attention().backward(gy)
    clear(q, k, v)


emit("attention 11 tokens (256,4,11,64) fwd", att_fwd, fl)
emit("attention 11 tokens (256,4,11,64) fwd+bwd", att_fwdbwd, 3 * fl)

# ---- GRU cell step: B 256, 128 -> 256 (nn.GRUCell's kernel) ------------------------------------------------------
B, I, Hd = 256, 128, 256
x, h = torch.randn(B, I), leaf(B, Hd)
cell = torch.nn.GRUCell(I, Hd)
gy = torch.randn(B, Hd)
fl = 2 * B * 3 * Hd * (I + Hd)


def gru_fwd():
    with torch.no_grad():
        cell(x, h)


def gru_fwdbwd():
    cell(x, h).backward(gy)
    clear(h, *cell.parameters())


emit("gru_cell (256, 128->256) fwd", gru_fwd, fl)
emit("gru_cell (256, 128->256) fwd+bwd", gru_fwdbwd, 3 * fl)
