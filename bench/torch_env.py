"""The PyTorch side's environment, set before torch is imported (import this module first):
TDRL_NUM_THREADS threads (default all cores) for OpenMP, OpenBLAS and torch;
OMP_WAIT_POLICY=passive (PyTorch's best setting on a 2-core machine, and ./tdrl's default); and,
as ./tdrl does, OPENBLAS_CORETYPE=SkylakeX / Haswell on CPUs with AVX-512 / AVX2, because Debian's
OpenBLAS 0.3.21 falls back to its slow Prescott kernels on CPUs it does not know. A value already
in the environment wins."""
import os

n_threads = int(os.environ.get("TDRL_NUM_THREADS", os.cpu_count()))
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = str(n_threads)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
if "OPENBLAS_CORETYPE" not in os.environ:
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
        if all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
            os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
        elif "avx2" in flags and "fma" in flags:
            os.environ["OPENBLAS_CORETYPE"] = "Haswell"
    except (OSError, StopIteration):
        pass

import torch  # noqa: E402

torch.set_num_threads(n_threads)
