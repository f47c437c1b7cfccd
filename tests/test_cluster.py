"""`lavie-curate run --ray-address` on a real two-node Ray cluster started on this machine.

The cluster is two `ray start --block` processes (a head and a worker node, one CPU each, each
with a resource of its own), token-authenticated with a token made for the test. It is stopped
by ending exactly the processes it started: `ray stop` would also end every other Ray on the
machine (this test session's own local Ray, and any other run of the suite).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from lavie.curate.cli import main as curate_main

BIN = Path(sys.executable).parent
STAGE_WORKER = "ray::MapWorker"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"ray node did not start:\n{log.read_text(errors='replace')[-3000:]}")


class LocalCluster:
    """A head and one worker node on loopback; `stop()` ends exactly their processes."""

    def __init__(self, root: Path, worker_gpus: int = 0):
        self.root = root
        self.worker_gpus = worker_gpus
        # Ray's sockets live under its temp dir, and a Unix socket path has at most 107 bytes:
        # pytest's tmp_path is too deep for that.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lavie-ray-", dir="/tmp" if Path("/tmp").is_dir() else None))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Our own token, so the cluster needs no token file in the user's home.
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        self.nodes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str]) -> None:
        log = self.root / f"{name}.log"
        with open(log, "w") as fh:
            self.nodes[name] = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                 "--disable-usage-stats", "--log-style", "record", *args],
                stdout=fh, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )
        _wait_for_line(log, "Ray runtime started", self.nodes[name])

    def start(self) -> "LocalCluster":
        self._start("head", [
            "--head", f"--port={self.port}", "--temp-dir", str(self.temp_dir),
            "--include-dashboard=false", "--dashboard-port", str(_free_port()),
            "--ray-client-server-port", str(_free_port()), "--resources", json.dumps({"head_node": 1}),
            "--num-gpus", "0",
        ])
        self._start("worker", ["--address", self.address, "--resources", json.dumps({"worker_node": 1}),
                               "--num-gpus", str(self.worker_gpus)])
        return self

    def raylets(self) -> dict[str, int]:
        """Each node's raylet pid: stage workers are its children."""
        found = {}
        for name, proc in self.nodes.items():
            for child in psutil.Process(proc.pid).children():
                if child.name() == "raylet":
                    found[name] = child.pid
        return found

    def stop(self) -> None:
        """SIGTERM each node's `ray start`, then SIGKILL whatever of its process tree remains.

        A head node drains for up to 30 s on SIGTERM; the tree is recorded first, so nothing
        it started is left behind, stage workers (which sit in process groups of their own)
        included.
        """
        tree: list[psutil.Process] = []
        for proc in self.nodes.values():
            try:
                tree.append(psutil.Process(proc.pid))
                tree.extend(psutil.Process(proc.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        psutil.wait_procs(tree, timeout=5)
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=10)
        for proc in self.nodes.values():
            proc.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _watch_stage_workers(raylets: dict[str, int], seen: dict[str, set[int]], stop: threading.Event) -> None:
    """Record, per node, the stage workers seen running a batch (`ray::MapWorker(...).submit`)."""
    while not stop.is_set():
        for node, raylet in raylets.items():
            try:
                workers = psutil.Process(raylet).children()
            except psutil.NoSuchProcess:
                continue
            for worker in workers:
                try:
                    title = " ".join(worker.cmdline()).strip()
                except psutil.Error:
                    continue
                # An actor running a batch, or a task worker running a stage (the scenes flat map).
                if (title.startswith(STAGE_WORKER) and title.endswith(".submit")) or title.startswith("ray::MapBatches("):
                    seen[node].add(worker.pid)
        time.sleep(0.05)


def _rows(path: Path) -> list[dict]:
    rows = pq.read_table(path).drop(["clip_path"]).to_pylist()
    return sorted(rows, key=lambda r: r["clip_id"])


@pytest.mark.slow
def test_run_on_a_two_node_cluster_matches_a_local_run(tmp_path, samples_dir, scenes_out):
    cluster = LocalCluster(tmp_path)
    try:
        cluster.start()
        raylets = cluster.raylets()
        assert sorted(raylets) == ["head", "worker"]
        seen: dict[str, set[int]] = {"head": set(), "worker": set()}
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_stage_workers, args=(raylets, seen, stop), daemon=True)
        watcher.start()
        out = tmp_path / "out"
        # Two scenes workers (one CPU each): one lands on each node.
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text("stages:\n  - stage: scenes\n  - stage: filter\n")
        run = subprocess.run(
            [str(BIN / "lavie-curate"), "run", str(samples_dir), "-o", str(out), "--ray-address", cluster.address,
             "-c", str(pipeline), "--no-progress"],
            env=cluster.env, capture_output=True, text=True, timeout=480,
        )
        stop.set()
        watcher.join()
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
        assert seen["head"] and seen["worker"], f"stage workers seen running batches per node: {seen}"
    finally:
        cluster.stop()
    for proc in cluster.nodes.values():
        assert proc.poll() is not None
    assert not [pid for pid in raylets.values() if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]

    # The same manifest as a local run: the session's local scenes run, filtered here in-process.
    local = tmp_path / "local-filtered"
    assert curate_main(["filter", str(scenes_out), "-o", str(local), "--cheap-only", "--no-progress"]) == 0
    assert _rows(out / "clips.parquet") == _rows(local / "clips.parquet")
    assert (out / "report" / "report.html").is_file()
    assert "RAY_ADDRESS" not in os.environ


# A driver joining the cluster: a stage that declares one GPU records where its actor ran.
GPU_DRIVER = """
import json, sys
import ray
import pyarrow as pa
from lavie.curate.config import load_curate_config
from lavie.curate.pipeline import run_stages
from lavie.curate.registry import register_stage
from lavie.curate.stage import Resources, Stage


@register_stage("where_am_i")
class WhereAmI(Stage):
    RESOURCES = Resources(cpus=1.0, gpus=1.0, holds_model=True)

    def setup(self):
        self.node = ray.get_runtime_context().get_node_id()
        self.gpus = ",".join(str(g) for g in ray.get_gpu_ids())

    def __call__(self, batch):
        return (batch.append_column("node", pa.array([self.node] * batch.num_rows))
                     .append_column("gpus", pa.array([self.gpus] * batch.num_rows)))


raw, out, address = sys.argv[1:4]
config = load_curate_config(None, settings={"distribution.ray_address": address, "stages": [
    {"stage": "scenes", "cut": "virtual"}, {"stage": "where_am_i"}]})
summary = run_stages(raw, out, config, progress=False)
nodes = {n["NodeID"]: n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]}
print(json.dumps({"nodes": nodes, "placement": summary.placement}))
"""


@pytest.mark.slow
def test_gpu_stages_run_where_the_cluster_has_gpus(tmp_path, samples_dir):
    """Only the worker node declares a GPU (`ray start --num-gpus 1`); the driver has none. The
    GPU-declaring stage must ask for it (from `ray.cluster_resources()`) and run on that node."""
    raw = tmp_path / "raw"
    raw.mkdir()
    os.symlink(samples_dir / "Travel" / "life_720p_25.mp4", raw / "life.mp4")
    cluster = LocalCluster(tmp_path, worker_gpus=1)
    try:
        cluster.start()
        run = subprocess.run([sys.executable, "-c", GPU_DRIVER, str(raw), str(tmp_path / "out"), cluster.address],
                             env={**cluster.env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                             timeout=480)
    finally:
        cluster.stop()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    gpu_nodes = [node for node, gpus in info["nodes"].items() if gpus > 0]
    assert len(info["nodes"]) == 2 and len(gpu_nodes) == 1
    assert info["placement"]["where_am_i"]["num_gpus"] == 1.0
    rows = pq.read_table(tmp_path / "out" / "clips.parquet").to_pylist()
    assert rows and {r["node"] for r in rows} == set(gpu_nodes)
    assert {r["gpus"] for r in rows} == {"0"}
