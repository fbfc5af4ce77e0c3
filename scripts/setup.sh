#!/bin/sh
# Installs the Debian packages tdrl needs when any is missing (as root), or prints the exact
# command and stops. Quick and silent when everything is present.
set -e
PKGS="make gcc pkg-config liblua5.4-dev libopenblas-dev libreadline-dev libstb-dev libjansson-dev zlib1g-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update >/dev/null && apt-get install -y --no-install-recommends $missing; }
else
  echo "setup: missing Debian packages. Run as root:"
  echo "  apt-get install -y --no-install-recommends$missing"
  exit 1
fi
