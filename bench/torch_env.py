"""The PyTorch side's environment, set before torch is imported (import this module first):
TDRL_NUM_THREADS threads (default all cores) for OpenMP, OpenBLAS and torch; the OpenMP setting
TDRL_PEER_OMP names (bench/run.lua times the peer under each and compares with its fastest):
  none     nothing set: libgomp's defaults (idle workers spin)
  passive  OMP_WAIT_POLICY=passive (idle workers sleep at once)
  bind     OMP_PROC_BIND=true (threads pinned; ../shared/peer/README.md's best for most steps)
(default passive); and, as ./tdrl does, OPENBLAS_CORETYPE=SkylakeX / Haswell on CPUs with
AVX-512 / AVX2, because Debian's OpenBLAS 0.3.21 falls back to its slow Prescott kernels on
CPUs it does not know. bench/run.lua passes tdrl's own core in OPENBLAS_CORETYPE, so that both
sides run the same kernels; a value already in the environment wins.
`python3 bench/torch_env.py` prints the core and setting this process got, as one JSON line."""
import ctypes
import json
import os

n_threads = int(os.environ.get("TDRL_NUM_THREADS", os.cpu_count()))
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = str(n_threads)
omp = os.environ.get("TDRL_PEER_OMP", "passive")
if omp == "passive":
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
elif omp == "bind":
    os.environ.setdefault("OMP_PROC_BIND", "true")
elif omp != "none":
    raise SystemExit(f"TDRL_PEER_OMP: none, passive or bind, not {omp!r}")


def _openblas():
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib
    except OSError:
        return None


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


def blas_core():
    """the OpenBLAS core (kernel set) torch's matmuls run on in this process"""
    lib = _openblas()
    return lib.openblas_get_corename().decode() if lib is not None else "unknown"


if __name__ == "__main__":
    print(json.dumps({"blas_core": blas_core(), "omp": omp, "threads": n_threads,
                      "torch": torch.__version__}))
