#!/bin/sh
# Installs the Jupyter kernelspec of tdrl, so that Jupyter (notebook, lab, nbconvert, console)
# can start `tdrl --kernel -f CONNECTION_FILE`. It writes files only: Jupyter itself is not needed.
#   scripts/install_kernel.sh                  for the user: ~/.local/share/jupyter/kernels/tdrl
#                                               (or $JUPYTER_DATA_DIR/kernels/tdrl)
#   scripts/install_kernel.sh --prefix DIR     under DIR/share/jupyter/kernels/tdrl (/usr/local, a venv)
#   scripts/install_kernel.sh --bin PATH       the binary Jupyter runs (default: DIR/bin/tdrl when the
#                                               prefix holds one, else ./tdrl of this tree)
#   scripts/install_kernel.sh --name NAME      the kernel's name (default tdrl)
# The template is share/jupyter/kernels/tdrl/kernel.json; its "tdrl" becomes the binary's absolute path.
set -e
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=""
bin=""
name=tdrl
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || { usage >&2; exit 2; }; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --user) prefix=""; shift ;;
    --bin) [ $# -ge 2 ] || { usage >&2; exit 2; }; bin=$2; shift 2 ;;
    --bin=*) bin=${1#*=}; shift ;;
    --name) [ $# -ge 2 ] || { usage >&2; exit 2; }; name=$2; shift 2 ;;
    --name=*) name=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install_kernel.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case $name in
  ''|*[!A-Za-z0-9._-]*) echo "install_kernel.sh: a kernel name uses letters, digits, '.', '_', '-'" >&2; exit 2 ;;
esac
if [ -z "$bin" ]; then
  if [ -n "$prefix" ] && [ -x "$prefix/bin/tdrl" ]; then bin=$prefix/bin/tdrl; else bin=$here/tdrl; fi
fi
if [ ! -x "$bin" ] || [ -d "$bin" ]; then
  echo "install_kernel.sh: no tdrl binary at $bin (run make first, or give --bin)" >&2
  exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
if [ -n "$prefix" ]; then
  dest=$prefix/share/jupyter/kernels/$name
else
  dest=${JUPYTER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/jupyter}/kernels/$name
fi
src=$here/share/jupyter/kernels/tdrl
mkdir -p "$dest"
# JSON string of the path: backslashes and quotes escaped; then replace the template's "tdrl"
json_bin=$(printf '%s' "$bin" | sed 's/\\/\\\\/g; s/"/\\"/g')
sed_bin=$(printf '%s' "$json_bin" | sed 's/[&|\\]/\\&/g')
sed "s|\"argv\": \[\"tdrl\"|\"argv\": [\"$sed_bin\"|" "$src/kernel.json" >"$dest/kernel.json.tmp"
grep -qF "[\"$json_bin\", \"--kernel\"" "$dest/kernel.json.tmp" || {
  echo "install_kernel.sh: could not write the binary's path into kernel.json" >&2; rm -f "$dest/kernel.json.tmp"; exit 1; }
mv "$dest/kernel.json.tmp" "$dest/kernel.json"
for f in "$src"/logo-*.png; do
  [ -f "$f" ] && cp "$f" "$dest/"
done
echo "installed the Jupyter kernel '$name' in $dest (runs $bin)"
