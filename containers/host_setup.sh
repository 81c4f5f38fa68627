#!/bin/sh
# Makes this Debian host able to build and run TwinTEE's images with podman (no Docker engine here):
# Debian's podman, runc and debootstrap, podman-compose from PyPI in its own virtualenv, and the
# containers.conf settings this kind of machine needs. Idempotent: a second run changes nothing.
set -eu

COMPOSE_VENV=${TWINTEE_COMPOSE_VENV:-/var/cache/twintee/compose-venv}
# Debian's podman-compose (1.0.3) cannot run this compose file (depends_on conditions, secrets);
# PyPI's 1.6 can.
PODMAN_COMPOSE_VERSION=1.6.0
CONF=/etc/containers/containers.conf

missing=""
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || test -x "/usr/sbin/$tool" || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap netavark aardvark-dns >/dev/null
fi

# crun fails on this kind of host and the default per-container ulimits cannot be set inside it:
# runc, cgroupfs and no default ulimits. Rewritten only when it differs, so it is safe to run twice.
want='# Written by containers/host_setup.sh (TwinTEE): what podman needs on this kind of host.
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$want" ]; then
  if [ -f "$CONF" ] && ! grep -q "containers/host_setup.sh" "$CONF"; then
    cp "$CONF" "$CONF.before-twintee"
    echo "kept the previous $CONF as $CONF.before-twintee"
  fi
  mkdir -p /etc/containers
  printf '%s\n' "$want" > "$CONF"
  echo "wrote $CONF"
fi

if ! "$COMPOSE_VENV/bin/podman-compose" version 2>/dev/null | grep -q "podman-compose version $PODMAN_COMPOSE_VERSION"; then
  python3 -m venv "$COMPOSE_VENV"
  "$COMPOSE_VENV/bin/pip" install -q "podman-compose==$PODMAN_COMPOSE_VERSION"
fi
echo "podman $(podman version --format '{{.Client.Version}}'), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'), $("$COMPOSE_VENV/bin/podman-compose" version 2>/dev/null | grep -m1 podman-compose)"
