"""`benchmarks/gpu.py` (make gpu-check): the tiny CPU run end to end, and the logic the GPU run
leans on: sections written as they finish, time budgets, the batch search, out-of-memory handling,
the peak-throughput table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
SECTIONS = ["header", "base_train", "interp_train", "vsr_train", "variants", "distributed", "sampling", "data_feeding",
            "decoder", "curation", "nvdec", "hygiene", "compile"]


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("lavie_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.slow
def test_tiny_run_on_cpu_fills_every_section(tmp_path):
    out = tmp_path / "out"
    # budgets are ceilings (~40 s in all on two quiet cores); scaled up, a machine busy with other
    # test runs still finishes every section, and the budget logic has its own tests below
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--budget-scale", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=560, cwd=ROOT)  # inside the suite's 600 s per test
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["finished"] is True
    head = report["header"]
    assert {"device_name", "driver", "torch", "cuda"} <= head.keys() and head["torch"] == torch.__version__
    assert list(report["sections"]) == SECTIONS
    status = {name: entry["status"] for name, entry in report["sections"].items()}
    assert status["compile"] == status["nvdec"] == "no CUDA"
    assert all(s == "ok" for n, s in status.items() if n not in ("compile", "nvdec")), status
    sections = report["sections"]

    for stage in ("base_train", "interp_train", "vsr_train"):
        rows = sections[stage]["rows"]
        assert [r["checkpointing"] for r in rows] == [False, True], (stage, sections[stage])
        assert all(r["batch"] >= 1 and r["s/step"] > 0 and r["tflop/step"] > 0 and r["mfu"] is None for r in rows)

    ddp, fsdp = sections["distributed"]["rows"][1:]
    assert ddp["mode"] == "ddp" and ddp["processes"] == 2 and ddp["distributed_type"] == "MULTI_CPU"
    assert ddp["agrees"] is True and ddp["max_rel_diff"] <= 1e-4  # two gloo ranks = one process on the whole batch
    assert "no CUDA" in fsdp["note"]

    sampled = {(r["config"], r["stage"]): r for r in sections["sampling"]["rows"]}
    # 2 key frames -> 4x interpolation -> 5 frames -> x4 super-resolution
    assert [sampled[("plain", s)]["frames_out"] for s in ("base", "interp", "vsr")] == ["2x16x16", "5x16x16", "5x64x64"]
    assert sampled[("vae_slicing", "vsr")]["frames_out"] == "5x64x64"

    feeding = sections["data_feeding"]["rows"][0]
    assert feeding["clips"] == 4 and feeding["clips/s"] > 0 and isinstance(feeding["starves"], bool)
    loaders = {r["loader"]: r for r in sections["decoder"]["rows"]}
    assert loaders["ClipDataset"]["clips"] == 3 and "torchcodec" in loaders  # measured, or the row says it is unusable here
    assert loaders["torchcodec"]["clips/s"] is not None or any("torchcodec not usable" in n for n in sections["decoder"]["notes"])

    curated = {r["stage"]: r for r in sections["curation"]["rows"]}
    assert set(curated) == {"clip", "caption"} and all(r["clips"] == 2 for r in curated.values())
    assert all(r["ok"] in (True, None) for r in sections["hygiene"]["rows"])
    assert [r["check"] for r in sections["hygiene"]["rows"]][1] == "NaN in the input, bf16"

    table = (out / "gpu-check.txt").read_text()
    assert all(f"== {name}: " in table for name in SECTIONS) and table in proc.stdout


def test_sections_are_written_as_they_run_and_skipped_when_out_of_time(gpu, tmp_path):
    report = gpu.Report(tmp_path / "gpu-check.json")
    seen = {}

    def first(budget):
        seen["first"] = json.loads(report.path.read_text())["sections"]["first"]["status"]
        return {"rows": [{"value": 1.5}]}

    def failing(budget):
        raise ValueError("boom")

    def cuda_only(budget):
        raise gpu.SectionSkipped(gpu.NO_CUDA)

    now = [0.0]

    def slow(budget):
        seen["after_failing"] = json.loads(report.path.read_text())["sections"]["failing"]["status"]
        now[0] += 117.0  # the run's clock: 3 s of its 120 s are left after this section
        return {"rows": []}

    def late(budget):
        raise AssertionError("a section with no time left must not start")

    sections = [("first", first), ("failing", failing), ("cuda_only", cuda_only), ("slow", slow), ("late", late)]
    budgets = {"first": 10, "failing": 10, "cuda_only": 10, "slow": 10, "late": 40}
    complete = gpu.run_sections(report, sections, budgets, total_s=120, log=lambda m: None, clock=lambda: now[0])
    assert complete is False
    assert seen == {"first": "running", "after_failing": "error"}
    result = json.loads(report.path.read_text())["sections"]
    assert [result[n]["status"] for n in budgets] == ["ok", "error", "no CUDA", "ok", "skipped"]
    assert "ValueError: boom" in result["failing"]["notes"][0]
    assert result["first"]["rows"] == [{"value": 1.5}]
    assert "out of time" in result["late"]["notes"][0]
    text = gpu.format_table({"header": {"device": "cpu"}, "sections": result})
    assert "== late: skipped" in text and "value" in text
    assert text.splitlines()[-1] == "sections: ok: first, slow; error: failing; no CUDA: cuda_only; skipped: late"


def test_a_run_past_its_total_time_is_cut_with_what_finished_on_disk(gpu, tmp_path):
    report = gpu.Report(tmp_path / "gpu-check.json")
    cut = {}

    def on_cut(name):
        cut["name"] = name
        cut["report"] = json.loads(report.path.read_text())

    sections = [("quick", lambda b: {"rows": [{"x": 1}]}), ("hangs", lambda b: time.sleep(3))]
    gpu.run_sections(report, sections, {"quick": 1, "hangs": 1}, total_s=1.5, on_cut=on_cut, log=lambda m: None)
    assert cut["name"] == "hangs"
    assert cut["report"]["sections"]["quick"]["status"] == "ok"
    assert cut["report"]["sections"]["hangs"]["status"] == "cut"


def test_largest_batch_doubles_then_bisects_and_respects_the_cap(gpu):
    budget = gpu.Budget(60)
    best, trials = gpu.largest_batch(lambda b: b <= 11, cap=64, budget=budget)
    assert best == 11
    assert [t["batch"] for t in trials] == [1, 2, 4, 8, 16, 12, 10, 11]
    best, trials = gpu.largest_batch(lambda b: True, cap=24, budget=budget)
    assert best == 24 and [t["batch"] for t in trials] == [1, 2, 4, 8, 16, 24]
    assert gpu.largest_batch(lambda b: False, cap=8, budget=budget)[0] == 0


def test_out_of_memory_in_a_step_is_a_message_not_a_crash(gpu, monkeypatch):
    monkeypatch.setattr(gpu, "make_batch", lambda shape, batch, device, seed=0: {"batch": batch})
    class Optimizer:
        cleared = 0

        def zero_grad(self, set_to_none=True):
            Optimizer.cleared += 1

    class Trainer:
        device = torch.device("cpu")
        optimizer = Optimizer()

        def __init__(self, error):
            self.error = error

        def step(self, batch):
            raise self.error

    shape = gpu.TrainShape("base", 2, 0, 16, 16, 2, 4, 8)
    fits, message = gpu.try_step(Trainer(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB\nmore")), shape, 4096)
    assert fits is False and message == "CUDA out of memory. Tried to allocate 80.00 GiB" and Optimizer.cleared == 1
    with pytest.raises(RuntimeError, match="shape mismatch"):
        gpu.try_step(Trainer(RuntimeError("shape mismatch")), shape, 1)


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.0), ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.05), ("NVIDIA L40", 181.05), ("NVIDIA L4", 121.0),
    ("NVIDIA A10", 125.0), ("NVIDIA GeForce RTX 4090", 165.2), ("NVIDIA A10G", None), ("Tesla V100-SXM2-16GB", None),
])
def test_peak_bf16_table(gpu, name, tflops):
    assert gpu.peak_bf16_tflops(name) == tflops


def test_user_errors_are_one_line_before_any_work(gpu, tmp_path, capsys):
    assert gpu.main(["--tiny", "--sections", "base_train,warp_drive", "--out", str(tmp_path / "a")]) == gpu.EXIT_USAGE
    assert "unknown section(s) warp_drive" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    if not torch.cuda.is_available():
        assert gpu.main(["--out", str(tmp_path / "b")]) == gpu.EXIT_USAGE
        assert "no CUDA device; run with --tiny" in capsys.readouterr().err


def _processes_with(marker: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:
            pass
    return found


def test_an_ended_worker_takes_every_rank_with_it(gpu, tmp_path):
    """torchrun starts each rank in a session of its own: ending the worker must still end them."""
    import threading

    args = gpu.parse_args(["--tiny", "--out", str(tmp_path)])
    check = gpu.GpuCheck(args, gpu.yaml.safe_load(gpu.CONFIG.read_text()))
    marker = str(check.scratch / "worker-distributed-ddp.json")
    outcome = {}

    def run() -> None:
        try:
            check.worker("distributed", {"mode": "ddp"}, gpu.Budget(300), nproc=2)
        except Exception as err:
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_processes_with(marker)) < 3:  # torchrun and its two ranks
            time.sleep(0.1)
        assert len(_processes_with(marker)) >= 3, "the ranks never started"
        check.kill_worker()
        thread.join(60)
        assert not thread.is_alive()
        assert "exited with status" in str(outcome.get("error"))
        time.sleep(0.5)
        assert _processes_with(marker) == []
    finally:
        check.close()
    assert not check.scratch.exists()
