"""A finished ``torchrun`` run of ``lafs pretrain`` or ``lafs finetune`` exits 0: the process
group and its gloo threads are gone before the interpreter shuts down (a gloo worker thread
alive at shutdown aborted the process about once in 30 runs under load)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# runs the CLI in-process, then lists the threads still alive in this rank
SCRIPT = """
import json, os, sys
from pathlib import Path
from lafslib.cli import main
code = main(sys.argv[2:])
threads = sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip()
                 for t in os.listdir("/proc/self/task"))
Path(sys.argv[1] + f"_rank{os.environ['RANK']}.json").write_text(json.dumps(threads))
sys.exit(code)
"""


def _recipe(tmp_path: Path, task: str) -> Path:
    data = yaml.safe_load((ROOT / f"recipes/demo/{task}_demo.yaml").read_text())
    data["run"].update(
        {"output_dir": str(tmp_path / task), "max_steps": 2, "log_every": 1, "tensorboard": False}
    )
    data["data"].update({"batch_size": 4, "synthetic_identities": 4, "synthetic_per_identity": 4})
    if task == "pretrain":
        data["views"]["local_views"] = 0
        data["head"]["out_dim"] = 64
    else:
        data["loss"]["partial_fc_rate"] = 0.5  # the sampled, sharded classifier and its gathers
    path = tmp_path / f"{task}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.distributed
@pytest.mark.parametrize("task", ["pretrain", "finetune"])
def test_two_process_run_exits_0_with_no_gloo_thread_left(tmp_path: Path, task: str) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "threads"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(script), str(out), task, str(_recipe(tmp_path, task))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout
    for rank in range(2):
        threads = json.loads(Path(f"{out}_rank{rank}.json").read_text())
        assert not [t for t in threads if "gloo" in t], threads


PARTIAL_FC = """
import json, os, sys, torch
from pathlib import Path
from lafslib.engine.distributed import init_distributed, teardown
from lafslib.losses import arcface
from lafslib.losses.partial_fc import PartialFC
init_distributed("cpu")
pfc = PartialFC(arcface(scale=16.0), 8, 10, sample_rate=0.5)
pfc(torch.randn(4, 8, requires_grad=True), torch.tensor([0, 3, 9, 3])).backward()
teardown()
threads = sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip()
                 for t in os.listdir("/proc/self/task"))
Path(sys.argv[1] + f"_rank{os.environ['RANK']}.json").write_text(json.dumps(threads))
"""


@pytest.mark.distributed
def test_teardown_frees_the_group_after_partial_fc_collectives(tmp_path: Path) -> None:
    """PartialFC's differentiable gathers (torch.distributed.nn.functional) used to pin the
    WORLD group through a default argument bound at import: its gloo threads then outlived
    destroy_process_group and could abort the interpreter's shutdown."""
    script = tmp_path / "pfc.py"
    script.write_text(PARTIAL_FC)
    out = tmp_path / "threads"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, str(script), str(out)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(2):
        threads = json.loads(Path(f"{out}_rank{rank}.json").read_text())
        assert not [t for t in threads if "gloo" in t], threads
