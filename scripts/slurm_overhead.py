#!/usr/bin/env python3
"""What running a study through Slurm costs the cluster and the driver (issue 18, item 7).

Generates a study of >= NODES tiny nodes (synthetic datasets, a 1-block ViT, one epoch) and
runs it twice with `vtab-orch run --launcher slurm --gpus none` on the test cluster
(scripts/local-slurm.sh), each time in a fresh store: one job per node, then warm workers
(`[slurm] workers = WORKERS`). Prints, as a Markdown table, for each:

- jobs submitted (sbatch calls), squeue and sacct calls, and those per minute of the run;
- the driver's CPU seconds (user + system, of the driver and the Slurm commands it ran);
- the wall time, and the median / 90th percentile time from a node becoming ready (its last
  input finished, as the driver saw it) to its start (as the driver saw it: the first line of
  its job's output, read at a poll).

Slurm calls are counted by shims in front of the real commands on PATH. Every figure comes from
this one run; nothing is compared with numbers measured elsewhere.

    python3 scripts/slurm_overhead.py [--nodes 1000] [--workers 6] [--poll-s 2] [--binary target/release/vtab-orch]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def suite_text(nodes, poll_s, workers):
    datasets = 10
    # 1 build, 2 prep per dataset, a train and an eval per run.
    runs = max(1, -(-(nodes - 1 - 2 * datasets) // 2))
    seeds = -(-runs // datasets)
    s = (
        'name = "overhead"\nstore = "store"\n'
        f"seeds = [{', '.join(str(i) for i in range(seeds))}]\n"
        "[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\n"
        '[backbone]\narch = "vit_tiny_patch16_224"\nimg_size = 16\npatch_size = 8\n'
        "embed_dim = 24\ndepth = 1\nnum_heads = 2\n"
        "[backbone.pretrain]\nimages = 100\nepochs = 1\n"
    )
    for d in range(datasets):
        s += f'[datasets.d{d}]\nformat = "synthetic"\ntask = "shape"\ntest_images = {40 + d}\n'
    s += "[methods.linear]\n"
    s += (
        f"[slurm]\npoll_floor_s = 0\npoll_s = {poll_s}\nmax_poll_s = {4 * poll_s}\n"
        f"cpus_per_task = 1\nmax_jobs = 100\nworkers = {workers}\nworker_idle_s = 30\n"
    )
    return s


def shims(dir_, log):
    os.makedirs(dir_, exist_ok=True)
    for tool in ["sbatch", "squeue", "sacct", "scancel"]:
        real = shutil.which(tool)
        if real is None:
            sys.exit(f"{tool} not found: start the test cluster (scripts/local-slurm.sh start)")
        path = os.path.join(dir_, tool)
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\necho "{tool} $(date +%s.%N)" >> "{log}"\nexec "{real}" "$@"\n')
        os.chmod(path, 0o755)


def run_study(a, workers):
    """Runs the study in a fresh folder; returns [(row, value)]."""
    work = tempfile.mkdtemp(prefix="vtab-slurm-overhead-")
    suite = os.path.join(work, "suite.toml")
    with open(suite, "w") as f:
        f.write(suite_text(a.nodes, a.poll_s, workers))
    calls = os.path.join(work, "calls.log")
    shims(os.path.join(work, "shims"), calls)
    env = dict(os.environ, PATH=os.path.join(work, "shims") + os.pathsep + os.environ["PATH"])
    plan = json.loads(subprocess.run(
        [a.binary, "plan", suite, "--json", "--gpus", "none"],
        check=True, capture_output=True, text=True, env=env).stdout)
    deps = {e["key"]: e["deps"] for e in plan}
    print(f"study: {len(plan)} nodes in {work}, workers = {workers}", file=sys.stderr)
    open(calls, "w").close()
    t0 = time.time()
    log = open(os.path.join(work, "driver.log"), "w")
    p = subprocess.Popen([a.binary, "run", suite, "--gpus", "none", "--launcher", "slurm"],
                         env=env, stdout=subprocess.DEVNULL, stderr=log)
    # wait4: the driver's own rusage (with the Slurm commands it waited for), not the plan's.
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.time() - t0
    cpu = ru.ru_utime + ru.ru_stime
    log.close()
    if status != 0:
        with open(os.path.join(work, "driver.log")) as f:
            sys.exit(f"the study failed (wait status {status}):\n{f.read()[-3000:]}")
    events = []
    runs = os.path.join(work, "store", "runs")
    for name in sorted(os.listdir(runs)):
        with open(os.path.join(runs, name)) as f:
            events += [json.loads(line) for line in f if line.strip()]
    done_at, started_at = {}, {}
    first = min(e["t"] for e in events)
    for e in events:
        if e["event"] in ("finished", "cached"):
            done_at.setdefault(e["key"], e["t"])
        if e["event"] == "started":
            started_at.setdefault(e["key"], e["t"])
    waits = []
    for key, t in started_at.items():
        ready = max([done_at.get(d, first) for d in deps.get(key, [])], default=first)
        waits.append(max(0.0, t - ready))
    waits.sort()
    counts = {t: 0 for t in ["sbatch", "squeue", "sacct", "scancel"]}
    with open(calls) as f:
        for line in f:
            counts[line.split()[0]] += 1
    minutes = wall / 60
    ran = sum(1 for e in events if e["event"] == "finished")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return [
        ("nodes in the study", len(plan)),
        ("nodes run", ran),
        ("jobs submitted (sbatch)", counts["sbatch"]),
        ("squeue calls (per minute)", f"{counts['squeue']} ({counts['squeue'] / minutes:.1f})"),
        ("sacct calls (per minute)", f"{counts['sacct']} ({counts['sacct'] / minutes:.1f})"),
        ("wall time (s)", f"{wall:.0f}"),
        ("driver CPU s (user+sys, with the Slurm commands it ran)", f"{cpu:.1f}"),
        ("ready -> start, median (s)", f"{statistics.median(waits):.1f}" if waits else "n/a"),
        ("ready -> start, 90th percentile (s)", f"{waits[int(0.9 * (len(waits) - 1))]:.1f}" if waits else "n/a"),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--poll-s", type=float, default=2.0)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "vtab-orch"))
    ap.add_argument("--keep", action="store_true", help="keep the studies' folders")
    a = ap.parse_args()
    if not os.path.exists(a.binary):
        sys.exit(f"{a.binary} not found (./x vtab-orch env builds it)")
    per_node = run_study(a, 0)
    warm = run_study(a, a.workers)
    print(f"| poll_s = {a.poll_s} | one job per node | warm workers ({a.workers}) |")
    print("| :--- | ---: | ---: |")
    for (k, v), (_, w) in zip(per_node, warm):
        print(f"| {k} | {v} | {w} |")


if __name__ == "__main__":
    main()
