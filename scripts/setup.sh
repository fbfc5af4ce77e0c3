#!/bin/sh
# Installs the Debian packages tdrl needs when any is missing (as root), or prints the exact
# command and stops. Quick and silent when everything is present.
#   scripts/setup.sh        what building and running tdrl needs (the Jupyter kernel included)
#   scripts/setup.sh test   and what the tests need besides: Python's Jupyter client and
#                           nbconvert, which drive the kernel and execute the notebooks
#   scripts/setup.sh fuzz   and clang (Debian 12: clang 14), which `make fuzz` builds with
set -e
PKGS="make gcc pkg-config liblua5.4-dev libopenblas-dev libreadline-dev libstb-dev libjansson-dev zlib1g-dev"
PKGS="$PKGS libzmq3-dev libssl-dev"
PKGS="$PKGS libopenmpi-dev openmpi-bin" # tdrl.dist: mpirun / srun runs (built without MPI when absent)
if [ "${1:-}" = fuzz ]; then # make fuzz: clang with libFuzzer and the sanitizers' runtimes
  PKGS="$PKGS clang libclang-rt-14-dev" # the runtimes are only recommended by clang-14
fi
if [ "${1:-}" = test ]; then
  PKGS="$PKGS python3 python3-zmq python3-jupyter-client python3-nbformat python3-nbclient python3-nbconvert"
  PKGS="$PKGS jupyter-nbconvert"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update >/dev/null && apt-get install -y --no-install-recommends $missing >/dev/null; }
else
  echo "setup: missing Debian packages. Run as root:"
  echo "  apt-get install -y --no-install-recommends$missing"
  exit 1
fi
