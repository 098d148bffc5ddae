#!/usr/bin/env bash
# The realistic cluster of tests/cluster.rs, on this one machine (README "Running on Slurm"):
# one store folder shared through FUSE mounts with their own kernel caches (nfs-store.sh:
# bindfs, entry/attr/negative timeouts of NFSX_TIMEOUT s, flock per mount like NFS
# local_lock or BeeGFS), two mounts for this "login node" (mnt, mnt2) and one inside each of
# three slurmd "hosts" vn1..vn3 in network namespaces (multi-node-slurm.sh, 1 fake GPU each).
#
#   scripts/cluster/up.sh start   install what is missing (apt), mount, start; idempotent
#   scripts/cluster/up.sh stop    stop the cluster, unmount
#   scripts/cluster/up.sh env     print the exports tests/cluster.rs reads
#
# Needs root, /dev/fuse, ip netns, unshare. Env: NFSX_TIMEOUT (default 5 s).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export NFSX_DIR="${NFSX_DIR:-/tmp/vtab-nfs}" NFSX_MODE=actimeo30 NFSX_LOCKS=local
export NFSX_TIMEOUT="${NFSX_TIMEOUT:-5}"
export MSLURM_DIR="${MSLURM_DIR:-/tmp/vtab-mslurm}"
say() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }

case "${1:-}" in
  start)
    NFSX_MNT="$NFSX_DIR/mnt" bash "$here/nfs-store.sh" start
    NFSX_MNT="$NFSX_DIR/mnt2" bash "$here/nfs-store.sh" start
    # The mounts must work, and cache: a name made through the export shows through mnt.
    probe="$NFSX_DIR/export/.probe.$$"
    echo ok >"$probe"
    [[ "$(cat "$NFSX_DIR/mnt/.probe.$$" 2>/dev/null)" == ok ]] || { say "error: $NFSX_DIR/mnt does not show the export"; rm -f "$probe"; exit 1; }
    rm -f "$probe"
    MSLURM_NODE_PRE="NFSX_MNT=$NFSX_DIR/mnt bash $here/nfs-store.sh node-mount" bash "$here/multi-node-slurm.sh" start
    ;;
  stop)
    bash "$here/multi-node-slurm.sh" stop || true
    NFSX_MNT="$NFSX_DIR/mnt2" bash "$here/nfs-store.sh" stop || true
    NFSX_MNT="$NFSX_DIR/mnt" bash "$here/nfs-store.sh" stop || true
    ;;
  env)
    echo "export VTAB_CLUSTER_CONF=\"$MSLURM_DIR/slurm.conf\" VTAB_CLUSTER_MNT=\"$NFSX_DIR/mnt\" VTAB_CLUSTER_MNT2=\"$NFSX_DIR/mnt2\" VTAB_CLUSTER_EXPORT=\"$NFSX_DIR/export\" VTAB_CLUSTER_CACHE_S=\"$NFSX_TIMEOUT\""
    ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
