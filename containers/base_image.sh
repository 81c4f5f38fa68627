#!/bin/sh
# Makes the local stand-in for the images' base when no registry is reachable: a minimal Debian
# bookworm root (debootstrap, from Debian's mirror) with python3 3.11 and venv, imported into podman
# as localhost/twintee-base:bookworm. Made once and kept: a second run finds the image and returns.
# Real builds use the published base pinned by digest in the Dockerfiles instead.
set -eu

IMAGE=localhost/twintee-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Debian's python3 is 3.11 in bookworm, the ABI of the cp311 torch wheel.
PACKAGES=python3,python3-venv,ca-certificates

if podman image exists "$IMAGE"; then
  echo "base image $IMAGE exists: $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)"
  exit 0
fi
root=$(mktemp -d /var/tmp/twintee-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm into $root (a few minutes)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -20 "$root.log"; exit 1; }
rm -f "$root.log"
# Nothing a build needs: package lists and caches (the images install nothing more with apt but nginx,
# whose own apt-get update fetches fresh lists).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" --numeric-owner --sort=name -c . | podman import \
  --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "base image $IMAGE made: $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)"
