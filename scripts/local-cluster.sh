#!/usr/bin/env bash
# A local aifs cluster on loopback: one MDS (or $MDS of them, each shard
# replicated over all), $OSDS OSDs, and FUSE mounts.
#   local-cluster.sh start        start everything and mount at $MNT
#                                 (stays in the foreground unless DETACH=1;
#                                 Ctrl-C stops it all)
#   local-cluster.sh mount DIR    mount one more client at DIR
#   local-cluster.sh stop         unmount and stop everything
# State (certificates, configs, data, logs, pids) lives in $STATE, by
# default $AIFS_HOME/local or ~/.aifs/local, where `mdsctl` finds it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
STATE="${STATE:-${AIFS_HOME:-$HOME/.aifs}/local}"
MNT="${MNT:-/mnt/ai}"
OSDS="${OSDS:-3}"
MDS="${MDS:-1}"
MDS_PORT="${MDS_PORT:-7000}"
OSD_PORT="${OSD_PORT:-7101}"
DETACH="${DETACH:-0}"
# Prometheus metrics over HTTP on loopback: the MDS at this port (MDS=3:
# mds1 at it, mds2 and mds3 below it), osd.N at this port + N, and the
# mounts from this port + 100 up. METRICS_PORT= serves none.
METRICS_PORT="${METRICS_PORT-9500}"
RUN="$STATE/run"
LOGS="$STATE/logs"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# The MDS processes: "mds" alone, or mds1..mdsN replicating every shard.
mds_names() { if [ "$MDS" = 1 ]; then echo mds; else seq -f 'mds%g' 1 "$MDS"; fi; }
any_mds_alive() { local p; for p in "$RUN"/mds*.pid; do alive "$p" && return 0; done; return 1; }
is_mounted() { grep -qs " $(realpath -m "$1") fuse" /proc/self/mounts; }
admin() { "$BIN/mdsctl" --config "$STATE/admin.toml" "$@"; }
# The flag that serves a daemon's metrics at loopback port $1, if any are served.
metrics_flag() { if [ -n "$METRICS_PORT" ]; then echo "--metrics-listen 127.0.0.1:$1"; fi; }

init_state() {
  mkdir -p "$STATE" "$RUN" "$LOGS"
  # osd1.pem: state made before each OSD had a certificate naming its id
  # gets new certificates (its data stays).
  if [ -f "$STATE/ca.pem" ] && [ "$(cat "$STATE/mds-count" 2>/dev/null || echo 1)" != "$MDS" ]; then
    echo "error: the state in $STATE was made for $(cat "$STATE/mds-count" 2>/dev/null || echo 1) MDS process(es), not MDS=$MDS;" \
      "run with that, or remove $STATE (its data goes with it)" >&2
    exit 1
  fi
  if [ ! -f "$STATE/ca.pem" ] || [ ! -f "$STATE/osd1.pem" ]; then
    local addrs
    addrs="$(seq "$MDS_PORT" "$((MDS_PORT + MDS - 1))" | sed 's/^/127.0.0.1:/' | paste -sd, -)"
    "$BIN/mdsctl" init --dir "$STATE" --mds "$addrs" --osds "$OSDS" --osd-port "$OSD_PORT" --force >/dev/null
    echo "$MDS" > "$STATE/mds-count"
    echo "created cluster state in $STATE (its CA in $STATE-ca)"
  fi
  # More OSDs than the state was made with: a certificate and config each.
  for i in $(seq 1 "$OSDS"); do
    if [ ! -f "$STATE/osd$i.pem" ]; then
      "$BIN/mdsctl" --config "$STATE/admin.toml" cert --ca-dir "$STATE-ca" issue --role osd --id "$i" --name "osd$i" \
        --out "$STATE" --listen "127.0.0.1:$((OSD_PORT + i - 1))" --data "$STATE/data/osd$i" >/dev/null
    fi
  done
}

wait_osds() {
  local want="$1"
  for _ in $(seq 1 100); do
    if [ "$(admin osd ls --json 2>/dev/null | grep -c '"Up"')" -ge "$want" ]; then return 0; fi
    sleep 0.2
  done
  echo "error: $want OSDs did not come up; see $LOGS" >&2
  return 1
}

mount_client() {
  local dir="$1" name
  dir="$(realpath -m "$dir")"
  if is_mounted "$dir"; then echo "error: something is already mounted at $dir" >&2; return 1; fi
  mkdir -p "$dir"
  if [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then echo "error: $dir is not empty" >&2; return 1; fi
  name="$(echo "$dir" | tr '/' '_')"
  local metrics=()
  if [ -n "$METRICS_PORT" ]; then
    shopt -s nullglob
    local mounts=("$RUN"/client*.mnt)
    metrics=(--metrics-listen "127.0.0.1:$((METRICS_PORT + 100 + ${#mounts[@]}))")
  fi
  setsid "$BIN/aifs-mount" --config "$STATE/client.toml" --name "$(hostname)$dir" "${metrics[@]}" "$dir" >"$LOGS/client$name.log" 2>&1 &
  echo $! > "$RUN/client$name.pid"
  echo "$dir" > "$RUN/client$name.mnt"
  for _ in $(seq 1 100); do
    is_mounted "$dir" && return 0
    kill -0 "$(cat "$RUN/client$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "error: mount at $dir failed; see $LOGS/client$name.log" >&2
  tail -5 "$LOGS/client$name.log" >&2 || true
  return 1
}

stop_all() {
  shopt -s nullglob
  for m in "$RUN"/client*.mnt; do
    local dir pid
    dir="$(cat "$m")"; pid="${m%.mnt}.pid"
    if is_mounted "$dir"; then fusermount3 -u "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true; fi
    if alive "$pid"; then
      for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && kill "$(cat "$pid")" 2>/dev/null || true
    fi
    rm -f "$m" "$pid"
    echo "unmounted $dir"
  done
  for p in "$RUN"/osd*.pid "$RUN"/mds*.pid; do
    if alive "$p"; then
      kill "$(cat "$p")" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
      alive "$p" && kill -9 "$(cat "$p")" 2>/dev/null || true
      echo "stopped $(basename "${p%.pid}")"
    fi
    rm -f "$p"
  done
}

start() {
  init_state
  if any_mds_alive; then
    echo "a local cluster is already running (state in $STATE); \`make stop\` first" >&2
    exit 1
  fi
  # Own sessions: Ctrl-C reaches this script, which stops things in order
  # (unmount first), rather than every process at once.
  local k=0
  for m in $(mds_names); do
    setsid "$BIN/aifs-mds" --config "$STATE/$m.toml" $(metrics_flag $((METRICS_PORT - k))) >"$LOGS/$m.log" 2>&1 &
    echo $! > "$RUN/$m.pid"
    k=$((k + 1))
  done
  for i in $(seq 1 "$OSDS"); do
    setsid "$BIN/aifs-osd" --config "$STATE/osd$i.toml" $(metrics_flag $((METRICS_PORT + i))) >"$LOGS/osd$i.log" 2>&1 &
    echo $! > "$RUN/osd$i.pid"
  done
  if ! wait_osds "$OSDS"; then stop_all; exit 1; fi
  if ! mount_client "$MNT"; then stop_all; exit 1; fi
  echo
  echo "aifs local cluster is up:"
  local port="$MDS_PORT"
  for m in $(mds_names); do
    echo "  $m$( [ "$m" = mds ] && echo '   ' || echo '  ')127.0.0.1:$port   pid $(cat "$RUN/$m.pid")"
    port=$((port + 1))
  done
  for i in $(seq 1 "$OSDS"); do
    echo "  osd.$i  127.0.0.1:$((OSD_PORT + i - 1))   pid $(cat "$RUN/osd$i.pid")"
  done
  echo "  mount  $MNT"
  echo "  state  $STATE (logs in $LOGS)"
  if [ -n "$METRICS_PORT" ]; then
    echo "  metrics  http://127.0.0.1:$METRICS_PORT/metrics (MDS), ports $((METRICS_PORT + 1))-$((METRICS_PORT + OSDS)) (OSDs), $((METRICS_PORT + 100)) (the mount)"
  fi
  echo
  echo "  $BIN/mdsctl status       cluster state"
  echo "  make mount MNT=/mnt/ai2  a second client"
  echo "  make stop                unmount and stop everything"
  if [ "$DETACH" = "1" ]; then return 0; fi
  echo "  Ctrl-C                   the same as make stop"
  trap 'echo; stop_all; exit 0' INT TERM
  while any_mds_alive; do sleep 1; done
  echo "the MDS exited; stopping" >&2
  stop_all
}

case "${1:-}" in
  start) start ;;
  stop) stop_all ;;
  mount)
    [ -n "${2:-}" ] || { echo "usage: $0 mount DIR" >&2; exit 2; }
    any_mds_alive || { echo "no local cluster is running; \`make run\` first" >&2; exit 1; }
    mount_client "$2" && echo "mounted $(realpath -m "$2")" ;;
  *) echo "usage: $0 start|stop|mount DIR" >&2; exit 2 ;;
esac
