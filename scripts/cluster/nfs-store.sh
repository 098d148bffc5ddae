#!/usr/bin/env bash
# A shared "NFS-like" store folder for vtab-orch on ONE machine whose kernel has no NFS.
#
# Why not real NFS: this kernel is built with `# CONFIG_NETWORK_FILESYSTEMS is not set` and
# without modules, so there is neither nfsd nor an NFS client: after `apt-get install
# nfs-kernel-server`, `mount -t nfsd nfsd /proc/fs/nfsd` says "unknown filesystem type
# 'nfsd'", `rpc.nfsd` says "Unable to access /proc/fs/nfsd errno 2", and
# `mount -t nfs -o vers=4.2 127.0.0.1:/x /mnt` says "mount.nfs: No such device".
#
# What this does instead: one backing folder (the "server export") and one FUSE mount of it
# per "client" (bindfs), each with its own kernel caches, like NFS clients:
#   NFSX_MODE=actimeo30  attr_timeout=30,entry_timeout=30,negative_timeout=30
#                        ~ `-o actimeo=30` with the default lookupcache=all: a name created
#                        by another client (an exit record, a store entry) can stay invisible
#                        here for up to 30 s, an attribute (size, mtime) stale for 30 s
#   NFSX_MODE=positive   the same but negative_timeout=0 ~ `-o actimeo=30,lookupcache=positive`
#   NFSX_MODE=noac       all 0 ~ `-o noac,lookupcache=none`
#   NFSX_LOCKS=server    (default) flock is forwarded to the backing file (bindfs
#                        --enable-lock-forwarding): one lock for all clients, like NFSv4 where
#                        flock becomes a lock on the server
#   NFSX_LOCKS=local     flock stays inside each mount, like `-o local_lock=flock` or nolock
# Differences from NFS it cannot show: no RPC/network latency or server reboot; close-to-open
# revalidation is weaker here (FUSE trusts cached attributes for attr_timeout even at open()).
#
#   nfs-store.sh start       make NFSX_DIR/export and mount it on NFSX_MNT in this namespace
#   nfs-store.sh node-mount  the same mount in the current (node's) mount namespace; meant for
#                            multi-node-slurm.sh: MSLURM_NODE_PRE='/path/nfs-store.sh node-mount'
#   nfs-store.sh stop        unmount NFSX_MNT here and end its bindfs (node mounts end with
#                            their node: multi-node-slurm.sh stop/crash)
#   nfs-store.sh status      mounts of NFSX_MNT in this namespace
# Env: NFSX_DIR (default /tmp/vtab-nfs), NFSX_MNT (default $NFSX_DIR/mnt), NFSX_MODE, NFSX_LOCKS,
#      NFSX_TIMEOUT (the cache timeouts of actimeo30 and positive, default 30 s; vtab-orch's
#      tests use 5 so that the lag is real but short).
# From ../shared/cluster/ (vtab-orch's cluster emulation), with NFSX_TIMEOUT and an apt-get
# update before installing bindfs on a fresh machine.
# Example (driver on the "login node" = root namespace, jobs on vn1..vn3):
#   bash nfs-store.sh start
#   MSLURM_NODE_PRE="NFSX_MODE=actimeo30 bash $PWD/nfs-store.sh node-mount" bash multi-node-slurm.sh start
#   vtab-orch run suite.toml --launcher slurm --gpus none --store /tmp/vtab-nfs/mnt/store
set -euo pipefail
base="${NFSX_DIR:-/tmp/vtab-nfs}"
mnt="${NFSX_MNT:-$base/mnt}"
export_dir="$base/export"
mode="${NFSX_MODE:-actimeo30}"
locks="${NFSX_LOCKS:-server}"
say() { printf '[nfs-store] %s\n' "$*" >&2; }

opts() {
  local t n
  case "$mode" in
    actimeo30) t=${NFSX_TIMEOUT:-30} n=${NFSX_TIMEOUT:-30} ;;
    positive) t=${NFSX_TIMEOUT:-30} n=0 ;;
    noac) t=0 n=0 ;;
    *) say "NFSX_MODE must be actimeo30, positive or noac"; exit 2 ;;
  esac
  local o=(-o "attr_timeout=$t,entry_timeout=$t,negative_timeout=$n")
  case "$locks" in
    server) o+=(--enable-lock-forwarding --multithreaded) ;;
    local) ;;
    *) say "NFSX_LOCKS must be server or local"; exit 2 ;;
  esac
  printf '%s\n' "${o[@]}"
}

mounted_here() { grep -q " $mnt fuse" /proc/self/mounts; }

do_mount() { # pidfile tag
  command -v bindfs >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq bindfs >/dev/null; }
  # A mount whose bindfs is gone (a session or machine that stopped without `stop`) answers
  # "Transport endpoint is not connected": take it away before anything else touches $mnt.
  while mounted_here && ! stat "$mnt" >/dev/null 2>&1; do
    say "$mnt is a dead mount (its bindfs is gone): unmounting it"
    fusermount -u "$mnt" 2>/dev/null || umount -l "$mnt"
  done
  mkdir -p "$export_dir" "$mnt"
  # a node's namespace sees the root namespace's mount too: a node always mounts its own on top
  if [[ "$2" == root ]] && mounted_here; then say "$mnt already mounted here"; return; fi
  mapfile -t o < <(opts)
  # a node mounts over the (non-empty) view of the root namespace's mount
  [[ "$2" == node ]] && o+=(-o nonempty)
  bindfs "${o[@]}" "$export_dir" "$mnt"
  # bindfs daemonizes; remember its pid (the newest bindfs serving this mount point)
  local p; p=$(pgrep -n -f "^bindfs .* $export_dir $mnt\$" || true)
  [[ -n "$p" ]] && echo "$p" >"$1"
  say "mounted $export_dir on $mnt (client $(hostname) [$2], mode=$mode, locks=$locks, bindfs pid ${p:-?})"
}

case "${1:-status}" in
  start) do_mount "$base/bindfs.root.pid" root ;;
  node-mount) do_mount "$base/bindfs.$(hostname).pid" node ;;
  stop)
    if mounted_here; then fusermount -u "$mnt" || umount -l "$mnt"; fi
    if [[ -s "$base/bindfs.root.pid" ]]; then
      p=$(cat "$base/bindfs.root.pid")
      if [[ "$(ps -o comm= -p "$p" 2>/dev/null)" == bindfs ]]; then kill "$p" 2>/dev/null || true; fi
      rm -f "$base/bindfs.root.pid"
    fi
    say "unmounted $mnt (the export $export_dir is kept)" ;;
  status) grep " $mnt " /proc/self/mounts || { echo "not mounted here"; exit 1; } ;;
  *) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
