#!/usr/bin/env bash
# The Debian programs the tests talk to (interoperability peers), installed when missing.
# Run by `npm test` before the suite; a test that needs a peer fails, never skips, without it.
#
#   mosquitto                 cloud broker and bridge baseline
#   mbpoll                    a third-party Modbus master
#   python3-pymodbus (+ python3-serial, python3-serial-asyncio)   a third-party Modbus slave
#   socat                     a virtual serial line for Modbus RTU
#   openssl                   certificates for the TLS tests, CMS signing of .swu images
#   cpio, swupdate            SWUpdate's hawkBit client (suricatta) against the update server
#   chromium                  the Node-RED editor in a headless browser
#   systemd                   systemd-analyze checks the shipped service units
#   rabbitmq-server           a three-node clustered cloud broker (MQTT plugin, quorum queues), sim/rabbit-cluster.ts
#   postgresql                the database of the reference cloud consumer (outpost cloud-ingest);
#                             the tests run initdb/postgres themselves on a free port
#
# Installs with apt-get as root, or through sudo when it works without a password; otherwise it
# names the packages to install and exits 1. OUTPOST_SKIP_PEERS=1 skips the check.
set -uo pipefail

[ "${OUTPOST_SKIP_PEERS:-}" = "1" ] && exit 0

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have mosquitto || need+=(mosquitto)
have mbpoll || need+=(mbpoll)
have socat || need+=(socat)
have openssl || need+=(openssl)
have cpio || need+=(cpio)
have systemd-analyze || need+=(systemd)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
/usr/bin/python3 -c 'import pymodbus, serial, serial_asyncio' >/dev/null 2>&1 || need+=(python3-pymodbus python3-serial python3-serial-asyncio)
# Without their recommends: swupdate would pull in a web server, chromium a desktop.
lean=()
have swupdate || lean+=(swupdate)
[ -x /usr/bin/chromium ] || lean+=(chromium)

if [ ${#need[@]} -eq 0 ] && [ ${#lean[@]} -eq 0 ]; then
  exit 0
fi

all=("${need[@]}" "${lean[@]}")
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
  else
    echo "test peers missing: ${all[*]}" >&2
    echo "install them as root, then run the tests again:" >&2
    echo "  apt-get update && apt-get install -y ${need[*]}${lean:+ && apt-get install -y --no-install-recommends ${lean[*]}}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "test peers missing: ${all[*]} (and no apt-get on this machine to install them: install them with its package manager)" >&2
  exit 1
fi

echo "installing the test peers: ${all[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
ok=1
"${as_root[@]}" apt-get update -qq >>"$log" 2>&1 || ok=0
if [ $ok -eq 1 ] && [ ${#need[@]} -gt 0 ]; then "${as_root[@]}" apt-get install -y -qq "${need[@]}" >>"$log" 2>&1 || ok=0; fi
if [ $ok -eq 1 ] && [ ${#lean[@]} -gt 0 ]; then "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${lean[@]}" >>"$log" 2>&1 || ok=0; fi
if [ $ok -eq 0 ]; then
  tail -n 20 "$log" >&2
  echo "could not install the test peers: ${all[*]}; install them with apt-get and run the tests again" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
# The tests start the brokers they need on free ports; the packaged services are not wanted.
if command -v systemctl >/dev/null 2>&1; then
  for unit in mosquitto rabbitmq-server postgresql; do
    "${as_root[@]}" systemctl stop "$unit" >/dev/null 2>&1 || true
    "${as_root[@]}" systemctl disable "$unit" >/dev/null 2>&1 || true
  done
fi
# Without systemd, Debian's maintainer script starts the packaged cluster with pg_ctlcluster.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _; do
    "${as_root[@]}" pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
  done
fi
exit 0
