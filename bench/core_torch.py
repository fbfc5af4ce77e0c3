"""PyTorch side of bench/core.lua: the same workloads, one JSON line each (run by bench/run.lua
with Debian's /usr/bin/python3). Threads: TDRL_NUM_THREADS or all cores, set before import."""
import json, os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_env import n_threads, torch  # noqa: E402  (threads, wait policy, BLAS core)


def timed(fn, min_time=0.5):
    fn(); fn()
    times, total = [], 0.0
    while len(times) < 3 or total < min_time:
        t0 = time.perf_counter(); fn(); dt = time.perf_counter() - t0
        times.append(dt); total += dt
    return statistics.median(times)


rows = []
for threads in sorted({1, n_threads}):
    torch.set_num_threads(threads)
    for n in (256, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        t = timed(lambda: a @ b)
        rows.append({"name": f"matmul {n}^3, {threads} thread{'s' if threads > 1 else ''}",
                     "value": 2 * n**3 / t / 1e9, "unit": "GFLOP/s", "higher": True})
torch.set_num_threads(n_threads)
n = 1 << 22
x, y = torch.randn(n), torch.randn(n)
for name, fn, k in (("add (a + b), 4M floats", lambda: x + y, 3), ("mul by scalar, 4M floats", lambda: x * 2, 2),
                    ("exp, 4M floats", lambda: x.exp(), 2), ("silu, 4M floats", lambda: torch.nn.functional.silu(x), 2),
                    ("sum, 4M floats", lambda: x.sum(), 1)):
    rows.append({"name": name, "value": k * 4 * n / timed(fn) / 1e9, "unit": "GB/s", "higher": True})
for r in rows:
    print(json.dumps(r))
