"""qlib.train.distributed: one run on several processes (DistributedDataParallel), on the CPU with
gloo and 2 processes launched by torchrun, held against one process with the global batch.

The 2-process checks run this file as torchrun's script (`python tests/test_distributed.py
<check> <folder>`), save what each rank saw, and the tests compare it with a one-process run
built here. Every launch has a timeout (the process group's own, and the subprocess's).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qlib import train as qtrain
from qlib.model import embed_images
from qlib.train import __main__ as cli
from qlib.train import distributed
from qlib.train import loop as qloop
from qlib.train.data import make_loader

REPO = Path(__file__).resolve().parent.parent
LAUNCH_TIMEOUT_S = 300  # one torchrun launch (about 10-30 s here)
COLLECTIVE_TIMEOUT_S = 120  # a rank waiting at a collective fails after this
N = 2  # processes
B = 2  # quadruplets per process
# One step's gradients of 2 processes x B against 1 process x 2B: float32 sums in another
# order (two half batches, then DDP's all-reduce). Measured: up to 6e-6 of each tensor's
# largest entry (semihard, second step); a wrong scale or per-rank statistics are far off.
GRAD_RTOL = 1e-4
CHECKED = {  # method -> overrides: a quadruplet method, Random's picks, an uneven baseline split
    "method2": {},
    "random": {},
    "semihard": {"images_per_class": 3},  # 5 classes x 3 = 15 images: 8 + 7 per rank
}


def check_config(run_root, method, batch_size, **overrides):
    """Smoke sizes, frozen BatchNorm (per-rank statistics on the CPU would differ from one
    process's; on CUDA SyncBatchNorm makes them equal), shards of 16 images (uneven: 32 + 16)."""
    values = {
        "method": method,
        "batch_size": batch_size,
        "epochs": 1,
        "iterations_per_epoch": 2,
        "eval_batch_size": 16,
        "freeze_bn": True,
        "eval_at_start": False,
        "progress": False,
        "run_root": str(run_root),
        **CHECKED.get(method, {}),
    }
    values.update(overrides)
    return qtrain.config_from_preset("smoke", **values)


def torchrun(args, timeout=LAUNCH_TIMEOUT_S, nproc=N):
    """Launch `nproc` CPU processes with torchrun; kill the whole launch on timeout."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        distributed.TIMEOUT_ENV: str(COLLECTIVE_TIMEOUT_S),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *args,
    ]
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills the launch and workers
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun {args} did not finish in {timeout} s:\n{out[-4000:]}")
    return proc.returncode, out


# ----------------------------------------------------------------------------------------------
# What each rank does (run by torchrun: python tests/test_distributed.py checks <folder>)
# ----------------------------------------------------------------------------------------------


def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def worker_checks(folder: Path) -> None:
    """Per method: the gathered bank, this rank's slice of the plan and its images, and the
    gradients of two steps (DDP's, identical on every rank after the all-reduce)."""
    device = torch.device("cpu")
    for method in CHECKED:
        config = check_config(folder / "ranks", method, B)
        with qloop.repeatable_cpu(device, None):
            run = qloop.setup(config, device)
            world = run.world
            assert world.distributed and world.size == N
            bank = world.embed(run.model, run.bank_loader)
            plan = qloop.next_plan(run, method, 2)
            saved = {
                "bank": bank,
                "shard_sizes": run.bank_loader.dataset.sizes,
                "batches": plan.batches,
                "local_items": world.local_items(plan.items, plan.batches),
            }
            if world.is_main:  # the whole training split embedded here, in one process
                loader = make_loader(run.data.train_eval_set, config, device, batch_size=16)
                saved["bank_here"] = embed_images(run.model, loader, on_device=True)
            images = iter(run.loader_for(plan))
            for i in range(2):
                batch_images = next(images)[0]
                result, finite = qloop.train_step(
                    run.step_model, run.loss_fn, run.optimizer, run.scaler, batch_images,
                    plan.batches[i], run.fine, run.coarse, None, run.world,
                )  # fmt: skip
                saved[f"images{i}"] = batch_images
                saved[f"grads{i}"] = gradients(run.model)
                saved[f"parts{i}"] = {k: float(v) for k, v in result.parts.items()}
                saved[f"finite{i}"] = finite
        torch.save(saved, folder / f"{method}_rank{world.rank}.pt")


def main(argv: list[str]) -> None:
    check, folder = argv
    {"checks": worker_checks}[check](Path(folder))
    distributed.shutdown()


# ----------------------------------------------------------------------------------------------
# Two processes against one
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of 2 ranks saw ({method: [rank 0, rank 1]}) and one-process runs with 2B."""
    folder = tmp_path_factory.mktemp("ddp_checks")
    code, out = torchrun([str(Path(__file__).resolve()), "checks", str(folder)])
    assert code == 0, out[-6000:]
    saved = {
        m: [torch.load(folder / f"{m}_rank{r}.pt", weights_only=False) for r in range(N)]
        for m in CHECKED
    }
    return saved, folder


@pytest.fixture(scope="module")
def single(ranks):
    """One process, batch N x B, the same seeds: bank, plan, images and two steps' gradients."""
    _, folder = ranks
    device = torch.device("cpu")
    results = {}
    for method in CHECKED:
        config = check_config(folder / "single", method, N * B)
        with qloop.repeatable_cpu(device, None):
            run = qloop.setup(config, device)
            assert not run.world.distributed
            bank = run.world.embed(run.model, run.bank_loader)
            plan = qloop.next_plan(run, method, 2)
            got = {"bank": bank, "batches": plan.batches, "items": plan.items}
            images = iter(run.loader_for(plan))
            for i in range(2):
                batch_images = next(images)[0]
                result, _ = qloop.train_step(
                    run.model, run.loss_fn, run.optimizer, run.scaler, batch_images,
                    plan.batches[i], run.fine, run.coarse,
                )  # fmt: skip
                got[f"images{i}"] = batch_images
                got[f"grads{i}"] = gradients(run.model)
                got[f"parts{i}"] = {k: float(v) for k, v in result.parts.items()}
        results[method] = got
    return results


def test_gathered_bank_equals_the_single_process_bank(ranks, single):
    saved, _ = ranks
    for method, (rank0, rank1) in saved.items():
        assert rank0["shard_sizes"] == [32, 16]  # whole batches of 16, uneven
        assert torch.equal(rank0["bank"], rank0["bank_here"]), method
        assert torch.equal(rank0["bank"], rank1["bank"]), method
        assert torch.equal(rank0["bank"], single[method]["bank"]), method


@pytest.mark.parametrize("method", list(CHECKED))
def test_selected_batches_of_2_x_b_equal_1_x_2b(ranks, single, method):
    saved, _ = ranks
    rank0, rank1 = saved[method]
    ref = single[method]
    for i in range(2):
        # Every rank holds the whole global batch, the one-process run's ...
        assert torch.equal(rank0["batches"][i], ref["batches"][i])
        assert torch.equal(rank1["batches"][i], ref["batches"][i])
        # ... and loads its own contiguous slice of its images (crop and flip keys included).
        assert rank0["local_items"][i] + rank1["local_items"][i] == ref["items"][i]
        both = torch.cat([rank0[f"images{i}"], rank1[f"images{i}"]])
        assert torch.equal(both, ref[f"images{i}"])
    if method == "semihard":
        assert [len(r["local_items"][0]) for r in (rank0, rank1)] == [8, 7]
    else:
        assert [len(r["local_items"][0]) for r in (rank0, rank1)] == [4 * B, 4 * B]


@pytest.mark.parametrize("method", list(CHECKED))
def test_one_step_gradients_match_a_single_process_step(ranks, single, method):
    """DDP's gradient (N x the global batch's loss per rank, averaged) equals one process's
    gradient of the same batch, eq. 3's statistics (and the baseline's) over the global batch."""
    saved, _ = ranks
    rank0, rank1 = saved[method]
    ref = single[method]
    for step in ("0", "1"):  # the second step: after one identical optimizer step
        grads, expected = rank0["grads" + step], ref["grads" + step]
        assert grads.keys() == expected.keys() and grads
        for name, g in grads.items():
            scale = float(expected[name].abs().max())
            assert float((g - expected[name]).abs().max()) <= GRAD_RTOL * scale + 1e-12, name
            assert torch.equal(g, rank1["grads" + step][name]), name  # all-reduced: the same
        # The logged parts are the global batch's, equal on every rank.
        assert rank0["parts" + step] == rank1["parts" + step]
        for key, value in ref["parts" + step].items():
            assert rank0["parts" + step][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
        assert rank0["finite" + step].shape[0] == ref["batches"][int(step)].shape[0]
    if method == "semihard":  # a baseline never reads the heads: no gradient, as in one process
        assert not any(n.startswith(("coarse_head", "fine_head")) for n in ref["grads0"])


# ----------------------------------------------------------------------------------------------
# The command line under torchrun: a smoke run, resume with the same N, refusal with another
# ----------------------------------------------------------------------------------------------


def smoke_args(run_root, *more):
    settings = {
        "run_root": str(run_root),
        "batch_size": 2,
        "iterations_per_epoch": 2,
        "epochs": 1,
        "eval_batch_size": 32,
        "progress": "false",
    }
    args = ["-m", "qlib.train", "--preset", "smoke", "--method", "method2", "--seed", "0"]
    return args + [f"--set={k}={v}" for k, v in settings.items()] + list(more)


def test_torchrun_smoke_run_writes_its_folder_and_resumes_with_the_same_n(tmp_path):
    code, out = torchrun(smoke_args(tmp_path))
    assert code == 0, out[-6000:]
    run_dir = tmp_path / "method2_seed0"
    assert str(run_dir) in out
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["distributed"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": False}
    assert saved["data"]["images_per_iteration"] == 4 * N * 2
    assert [m["epoch"] for m in qtrain.read_metrics(run_dir)] == [0, 1]
    assert len(qtrain.read_log(run_dir)) == 2
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["world_size"] == N

    # Resume with the same number of processes: one more epoch.
    code, out = torchrun(smoke_args(tmp_path, "--resume", "--set=epochs=2"))
    assert code == 0, out[-6000:]
    log = qtrain.read_log(run_dir)
    assert list(log["iteration"]) == [1, 2, 3, 4]
    assert json.loads((run_dir / "config.json").read_text())["resumed_from_epoch"] == 1
    assert qtrain.read_metrics(run_dir)[-1]["final"]

    # Resume in one process: refused with what to do.
    config = qtrain.config_from_preset(
        "smoke", run_root=str(tmp_path), batch_size=2, iterations_per_epoch=2, epochs=3,
        eval_batch_size=32, progress=False, resume=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"trained on 2 process\(es\).*--nproc_per_node 2"):
        qtrain.train(config)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_torchrun_smoke_run_with_nccl_and_sync_batchnorm(tmp_path):
    """On the GPUs (up to 2; one still runs the nccl, DDP and SyncBatchNorm code paths)."""
    nproc = min(2, torch.cuda.device_count())
    code, out = torchrun(smoke_args(tmp_path, "--set=device=cuda"), nproc=nproc)
    assert code == 0, out[-6000:]
    saved = json.loads((tmp_path / "method2_seed0" / "config.json").read_text())
    assert saved["distributed"] == {
        "world_size": nproc,
        "backend": "nccl",
        "sync_batchnorm": True,
    }
    assert saved["environment"]["device"] == "cuda:0"
    assert qtrain.read_metrics(tmp_path / "method2_seed0")[-1]["final"]


# ----------------------------------------------------------------------------------------------
# In one process: the pieces, and nothing changes
# ----------------------------------------------------------------------------------------------


def world(size, rank):
    return distributed.World(size=size, rank=rank, distributed=True, backend="gloo")


def test_split_rows_and_image_sizes():
    assert world(3, 0).split(10) == [4, 3, 3]
    assert world(2, 1).image_sizes(torch.zeros(6, 4)) == [12, 12]  # quadruplets: 4 images a row
    assert world(2, 1).image_sizes(torch.zeros(15)) == [8, 7]


@pytest.mark.parametrize("n, batch, size", [(48, 16, 2), (100, 16, 3), (10, 16, 2), (64, 8, 4)])
def test_shards_are_whole_batches_covering_the_dataset_in_order(n, batch, size):
    shards = [world(size, r).shard(list(range(n)), batch) for r in range(size)]
    assert [i for s in shards for i in s.indices] == list(range(n))
    assert all(s.sizes == [len(t) for t in shards] for s in shards)
    assert all(s.indices.start % batch == 0 for s in shards if len(s))


def test_local_items_are_each_ranks_slice_and_an_empty_slice_is_refused():
    items = [[(i, 0.0, 0.0, 0.0) for i in range(8)]]
    quadruplets = [torch.zeros(2, 4, dtype=torch.long)]
    assert world(2, 1).local_items(items, quadruplets) == [items[0][4:]]
    with pytest.raises(ValueError, match="without images"):
        world(4, 3).local_items([items[0][:3]], [torch.zeros(3, dtype=torch.long)])


def test_one_process_world_changes_nothing():
    single = distributed.SINGLE
    model = torch.nn.Linear(2, 2)
    total = torch.tensor(3.0)
    assert single.objective(total) is total
    out = (torch.zeros(4, 2),)
    assert single.gather_output(out, torch.zeros(1, 4)) is out
    assert single.shard(out, 2) is out
    assert single.wrap(model, qtrain.TrainConfig()) is model
    assert distributed.world_for(torch.device("cpu")) == distributed.World()


def test_resume_needs_the_same_number_of_processes():
    world(2, 0).check_resume({"world_size": 2})
    with pytest.raises(ValueError, match=r"trained on 1 process\(es\) and this launch has 4"):
        world(4, 0).check_resume({})  # checkpoints before multi-process training: one process


def test_command_line_settings_are_typed_by_the_config_field():
    assert cli.parse_setting("epochs=3") == ("epochs", 3)
    assert cli.parse_setting("lr=3e-4") == ("lr", 3e-4)
    assert cli.parse_setting("amp=false") == ("amp", False)
    assert cli.parse_setting("image_size=null") == ("image_size", None)
    assert cli.parse_setting("run_name=123") == ("run_name", "123")  # a text field stays text
    assert cli.parse_setting("root=None") == ("root", None)
    with pytest.raises(ValueError, match="TrainConfig field"):
        cli.parse_setting("learning_rate=1")


def test_command_line_trains_one_process_and_reports_errors_in_one_line(tmp_path, capsys):
    code = cli.main(
        ["--preset", "smoke", "--method", "random", "--set", f"run_root={tmp_path}",
         "--set", "epochs=1", "--set", "iterations_per_epoch=1", "--set", "progress=false"]
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "random_seed0")
    assert cli.main(["--preset", "smoke", "--set", "batch_size=0"]) == 1
    assert "error: batch_size" in capsys.readouterr().err


if __name__ == "__main__":
    main(sys.argv[1:])
