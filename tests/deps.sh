#!/bin/sh
# Installs the Debian packages the build, the tests, the demo and the
# benchmarks need. Idempotent: does nothing when all are present.
set -e
PKGS="g++ make pkg-config libhiredis-dev libpq-dev libcurl4-openssl-dev
libconfig-dev libseccomp-dev libmsgpack-dev nlohmann-json3-dev libssl-dev
libgtest-dev libgmock-dev googletest redis-server redis-tools postgresql
postgresql-client openssh-server openssh-client openssl python3 procps
clang libclang-rt-14-dev groff man-db devscripts curl qemu-utils
libsystemd-dev libmicrohttpd-dev prometheus redis-sentinel tinyproxy iproute2"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing Debian packages:$missing (run 'make deps' as root)" >&2
  exit 1
fi
echo "deps: installing$missing"
apt-get update -qq
# prometheus is here for its promtool (the metrics test), redis-sentinel
# and tinyproxy for the failover and proxy tests (the harness starts its own
# on free ports). Their packages also bring services, which must not start
# on a test machine: a policy-rc.d refusing them for the install (unless the
# machine has its own policy), and the units disabled afterwards.
services="prometheus redis-sentinel tinyproxy"
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\ncase "$1" in prometheus|redis-sentinel|tinyproxy) exit 101 ;; esac\nexit 0\n' > $policy
  chmod 755 $policy
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing || {
  [ -z "$policy" ] || rm -f "$policy"; exit 1; }
[ -z "$policy" ] || rm -f "$policy"
for svc in $services; do
  case "$missing " in *" $svc "*)
    command -v deb-systemd-helper >/dev/null && deb-systemd-helper disable "$svc.service" || true ;;
  esac
done
