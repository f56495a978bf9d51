#!/usr/bin/env bash
# Install what aifs needs at run time: FUSE 3 (fusermount3, /dev/fuse).
set -euo pipefail
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing ${need[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi
[ -e /dev/fuse ] || { echo "error: /dev/fuse is missing; FUSE is not available on this machine" >&2; exit 1; }
# FUSE over io_uring (Linux 6.14 and later): the kernel queues each request
# on its caller's CPU, where aifs-mount answers it (client/vendor/fuser/
# src/uring.rs). The kernel offers it only with this switch on; without it
# (or with AIFS_FUSE_URING=0) mounts use /dev/fuse.
uring=/sys/module/fuse/parameters/enable_uring
if [ "${AIFS_FUSE_URING:-1}" != 0 ] && [ -w "$uring" ] && [ "$(cat "$uring")" != Y ]; then
  echo Y > "$uring" 2>/dev/null && echo "FUSE over io_uring enabled (fuse.enable_uring=Y)" || true
fi
