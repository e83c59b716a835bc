#!/usr/bin/env bash
# Installs and starts what bench/storage/peers.py needs (Debian 12, as root), idempotently;
# says what it did on stderr.
#
#   - dosfstools + mtools: the guest's NoCloud seed (a CIDATA vfat image, filled by mcopy);
#   - QEMU (qemu-system-x86 + qemu-utils) when missing;
#   - libvirt 9.0 without systemd: libvirt-daemon, -driver-qemu and -clients
#     (libvirt-daemon-system would pull systemd in; with systemd as PID 1 it is used instead);
#   - the `libvirt-qemu` user: libvirtd resolves it before reading qemu.conf and refuses to
#     start without it, and without the -system package nothing creates it;
#   - /etc/libvirt/qemu.conf: user = "root", group = "root" (QEMU runs as root, like the bare
#     QEMU peer and Plinth's agent; also keeps libvirt's capability cache valid on a host
#     whose /dev/kvm only root can open, see bench/boot/run);
#   - virtlogd -d and libvirtd -d when they do not run and there is no systemd.
#
# Leaves the daemons running (peers.py connects to qemu:///system). To stop them later:
#   kill "$(cat /run/libvirtd.pid)" "$(cat /run/virtlogd.pid)"
set -euo pipefail

say() { echo "install-peers: $*" >&2; }
die() { echo "install-peers: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"
export DEBIAN_FRONTEND=noninteractive
uri=qemu:///system
systemd=0
[ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && systemd=1

# --- packages ------------------------------------------------------------------------------
need=()
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
# The two together, in one apt command: qemu-system-x86 alone removes a newer qemu-utils.
{ command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null; } || need+=(qemu-system-x86 qemu-utils)
if ! command -v virsh >/dev/null || ! command -v libvirtd >/dev/null ||
  ! ls /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so >/dev/null 2>&1; then
  if [ "$systemd" = 1 ]; then
    need+=(libvirt-daemon-system libvirt-clients)
  else
    need+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (apt, --no-install-recommends)"
  if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
    say "apt-get update"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
else
  say "packages already installed (dosfstools, mtools, qemu, libvirt)"
fi

# --- libvirt's user and configuration ------------------------------------------------------
if id libvirt-qemu >/dev/null 2>&1; then
  say "user libvirt-qemu exists"
else
  say "creating the libvirt-qemu user libvirtd expects (useradd -r -U libvirt-qemu)"
  useradd -r -U libvirt-qemu
fi
mkdir -p /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt

qemu_conf=/etc/libvirt/qemu.conf
conf_changed=0
touch "$qemu_conf"
if grep -qE '^[[:space:]]*user[[:space:]]*=[[:space:]]*"root"' "$qemu_conf" &&
  grep -qE '^[[:space:]]*group[[:space:]]*=[[:space:]]*"root"' "$qemu_conf"; then
  say "$qemu_conf already runs QEMU as root"
else
  if grep -qE '^[[:space:]]*(user|group)[[:space:]]*=' "$qemu_conf"; then
    die "$qemu_conf sets user/group to something other than root; set both to \"root\" and run again"
  fi
  say "setting user = \"root\", group = \"root\" in $qemu_conf"
  printf '\n# Added by plinth bench/storage/install-peers.sh: QEMU runs as root, like bare QEMU and the Plinth agent.\nuser = "root"\ngroup = "root"\n' >>"$qemu_conf"
  conf_changed=1
fi

# --- daemons -------------------------------------------------------------------------------
libvirt_up() { virsh -q -c "$uri" uri >/dev/null 2>&1; }
if [ "$systemd" = 1 ]; then
  if [ "$conf_changed" = 1 ]; then
    say "systemctl restart libvirtd"; systemctl restart libvirtd
  elif ! libvirt_up; then
    say "systemctl start libvirtd"; systemctl start libvirtd
  fi
else
  if ! pgrep -x virtlogd >/dev/null; then
    say "starting virtlogd -d (no systemd here)"
    virtlogd -d
    for _ in $(seq 1 50); do [ -s /run/virtlogd.pid ] && break; sleep 0.1; done
  else
    say "virtlogd already runs"
  fi
  if libvirt_up && [ "$conf_changed" = 1 ]; then
    pid=$(cat /run/libvirtd.pid 2>/dev/null || true)
    [ -n "$pid" ] || die "libvirtd runs without /run/libvirtd.pid and $qemu_conf changed: restart it by hand"
    say "restarting libvirtd (pid $pid) for the new $qemu_conf"
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$pid" 2>/dev/null || die "libvirtd (pid $pid) did not stop within 10 s"
  fi
  if libvirt_up; then
    say "libvirtd already answers on $uri"
  else
    say "starting libvirtd -d (no systemd here)"
    libvirtd -d
    for _ in $(seq 1 100); do libvirt_up && break; sleep 0.1; done
  fi
fi
libvirt_up || die "cannot connect to $uri"
say "ready: $(virsh -q -c "$uri" version 2>/dev/null | tr '\n' ' ' | tr -s ' ')"
