"""Disk, files and runtime errors made to happen for real: a full file system (a small tmpfs, else a file size
limit) under a pre-training run and a `prepare`, byte-identical outputs of two identical runs, a rendezvous no peer
joins, a NaN in fine-tuning, a GPU out-of-memory error, and Ctrl-C: each ends with one line and its exit code."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mim.cli.main import main, report_error
from mim.data import load_dataset
from mim.engine.checkpoint import load_checkpoint
from mim.engine.runtime import GpuOutOfMemoryError
from mim.evaluation.finetune import FinetuneNonFiniteLossError, finetune
from mim.methods.mae import MAE
from mim.models.vit import MaskedViT, ViTSpec, build_vit
from mim.params import DataParams
from mim.params.bind.data import augment
from mim.project.runs import run_files
from tests.helpers import ROOT, one_error_line, pretrain, tiny_overrides, tiny_params

TINY_SETS = [a for s in tiny_overrides("mae", **{"data.source": "synthetic:96", "model.depth": 1})
             for a in ("--set", s)]


def _mim(*args: str, timeout: float = 120, preexec=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MIM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mim.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT, preexec_fn=preexec)


@contextlib.contextmanager
def small_filesystem(folder: Path, size_kb: int) -> Iterator[bool]:
    """A `size_kb` tmpfs mounted at `folder` (yields True), or, where mounting is refused, nothing (yields False:
    the caller limits file sizes instead)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, leave_bytes: int) -> None:
    """Fill the file system of `folder` until `leave_bytes` are free."""
    st = os.statvfs(folder)
    (folder / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG
    return apply


def _leftover_temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def test_a_full_disk_during_pretraining_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    # the size of this run's checkpoint, measured on a roomy disk
    sets = ["--set", "train.steps=4", "--set", "train.ckpt_every=2"]
    measured = pretrain(tiny_params("mae", data__source="synthetic:96", model__depth=1, train__steps=4,
                                    train__ckpt_every=2), str(tmp_path / "measure"))
    assert measured.steps == 4
    size = os.path.getsize(run_files(str(tmp_path / "measure")).checkpoint)
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    disk = tmp_path / "disk"
    with small_filesystem(disk, 2048) as mounted:
        if mounted:  # room for the step-2 checkpoint and the run's small files, not for the step-4 one beside it
            out = disk / "run"
            _fill(disk, size + size // 2)
            code, stderr = main(["-q", "pretrain", "--out", str(out), *TINY_SETS, *sets]), capsys.readouterr().err
        else:  # no mount here: every file larger than the limit fails (a checkpoint is the largest file)
            out = tmp_path / "limited"
            proc = _mim("-q", "pretrain", "--out", str(out), *TINY_SETS, *sets, preexec=_limit_file_size(size // 2))
            code, stderr = proc.returncode, proc.stderr
        ckpt = Path(run_files(str(out)).checkpoint)
        line = one_error_line(stderr, "pretrain")
        assert code == 1
        cause = "No space left on device" if mounted else "File too large"
        assert line == f"mim pretrain: error: could not write {ckpt}: {cause} " + (
            "(the previous file is kept)" if mounted else "(nothing was written there)")
        assert not _leftover_temps(out)
        if mounted:  # the step-2 checkpoint is whole and loads
            assert load_checkpoint(str(ckpt))["step"] == 2


def test_a_full_disk_while_preparing_keeps_the_previous_prepared_data(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    disk = tmp_path / "disk"
    with small_filesystem(disk, 1024) as mounted:
        if not mounted:
            pytest.skip("mount -t tmpfs is refused here (a file size limit does not fill litdata's chunks)")
        out = disk / "run"
        manifest = out / "prepared" / "manifest.json"  # a complete earlier preparation of other data params
        manifest.parent.mkdir(parents=True)
        manifest.write_text(json.dumps({"format": "mim-prepared/1", "data": {"source": "synthetic:64"}, "splits": {}}))
        _fill(disk, 24 * 1024)
        code = main(["-q", "pretrain", "--out", str(out), *TINY_SETS, "--set", "data.storage=shards",
                     "--set", "train.steps=1"])
        line = one_error_line(capsys.readouterr().err, "pretrain")
        assert code == 1
        assert line == (f"mim pretrain: error: could not write {out}/prepared/train: No space left on device "
                        "(nothing was written there)")
        # the earlier preparation is kept as it was; the new one's temporary folder is gone
        assert json.loads(manifest.read_text())["data"] == {"source": "synthetic:64"}
        assert not (out / "prepared" / "train").exists() and not _leftover_temps(out)
        # arrays (what `mim prepare` writes for in-memory sources): the same, and no temporary file is left
        from mim.io import OutputWriteError
        from mim.params.bind.data import prepare

        root = disk / "arrays"
        root.mkdir()
        (root / "manifest.json").write_text(json.dumps({"format": "mim-prepared/1", "splits": {}}))
        with pytest.raises(OutputWriteError, match="No space left on device"):
            prepare(DataParams(source="synthetic:256", image_size=16, storage="array"), str(root))
        assert (root / "manifest.json").exists() and not _leftover_temps(disk)


SAVE_AND_MEASURE = """
import resource, sys, torch
from mim.engine.checkpoint import save_checkpoint
state = {"model": {"w": torch.ones(16 * 2**20)}, "step": 1}  # 64 MiB
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
save_checkpoint(state, sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.slow
def test_a_checkpoint_is_streamed_into_its_file_not_held_twice(tmp_path):
    """The peak memory of a fresh process grows by less than the state while a 64 MiB checkpoint is written
    (serialized into memory first, it grew by 64 MiB)."""
    proc = subprocess.run([sys.executable, "-c", SAVE_AND_MEASURE, str(tmp_path / "ckpt.pt")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 16
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["model"]["w"].shape == (16 * 2**20,)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_identical_runs_write_byte_identical_artifacts(tmp_path, monkeypatch):
    """`mim pretrain --out a` and `--out b` with the same params. safetensors writes its metadata in the order of
    a Rust hash map, seeded anew for every map (measured: 20 saves of one map in one process gave 20 different
    files), so two runs in one process show it as well as two processes."""
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    for name in ("a", "b"):
        assert main(["-q", "pretrain", "--out", str(tmp_path / name), *TINY_SETS, "--set", "train.steps=2"]) == 0
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    # what the pipeline's DVC stage outputs hold (train_metrics.json has wall time and img/s; the checkpoint is no
    # DVC output)
    same = ["encoder.safetensors", "history.csv", "params.json", "loss.png", "reconstructions.png"]
    assert [name for name in same if a[name] != b[name]] == []


@pytest.mark.slow
def test_a_rendezvous_no_peer_joins_ends_in_one_line(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a free port: node 0 (here) waits there for a second node that never comes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MIM_RDZV_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code = main(["-q", "pretrain", "--out", str(tmp_path / "run"), *TINY_SETS, "--set", "launcher.nnodes=2",
                 "--set", "launcher.rdzv_timeout_s=1"])
    err = capsys.readouterr().err
    line = one_error_line(err, "pretrain")
    assert code == 1
    assert line == (f"mim pretrain: error: not all 2 nodes (launcher.nnodes) joined the rendezvous at 127.0.0.1:{port} "
                    "(MIM_RDZV_ENDPOINT) within 1 s (launcher.rdzv_timeout_s): start the same command on every "
                    "node, or check MIM_RDZV_ENDPOINT and launcher.nnodes")
    monkeypatch.setenv("MIM_RDZV_ENDPOINT", "no-such-node.invalid:29400")
    assert main(["-q", "pretrain", "--out", str(tmp_path / "run"), *TINY_SETS, "--set", "launcher.nnodes=2"]) == 1
    assert "cannot resolve host 'no-such-node.invalid'" in one_error_line(capsys.readouterr().err, "pretrain")


@pytest.mark.slow
def test_a_ranks_one_line_error_is_not_followed_by_torchruns_traceback(capsys):
    """A real torchrun whose rank stops with a one-line error (here argparse's, the quickest to reach): the rank's
    lines, not the agent's ChildFailedError traceback and its table of ranks."""
    from mim.engine.launch import relaunch_with_torchrun

    assert relaunch_with_torchrun(1, 1, ["params"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ChildFailedError" not in err and "exitcode" not in err, err
    assert err.strip().splitlines()[-1] == "mim params: error: the following arguments are required: params_command"


def test_a_nan_in_finetuning_is_one_line_naming_the_step_and_the_lr(capsys):
    d = DataParams(source="synthetic:64", image_size=16)
    train, test = load_dataset(d.source, "train", size=16), load_dataset(d.source, "test", size=16)
    torch.manual_seed(0)
    vit = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
    with pytest.raises(FinetuneNonFiniteLossError) as caught:
        finetune(vit, train, test, augment(d), epochs=4, batch_size=32, base_lr=1e30, warmup_fraction=0.0,
                 device="cpu", seed=0)
    assert report_error("transfer", caught.value) == 1
    line = one_error_line(capsys.readouterr().err, "transfer")
    assert line.startswith("mim transfer: error: fine-tuning loss is nan at step ")
    assert line.endswith(": lower finetune.base_lr (now 1e+30)")


def test_gpu_out_of_memory_names_the_batch_size_to_lower(tmp_path, monkeypatch, capsys):
    def out_of_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MAE, "forward", out_of_memory)  # no GPU here: the method's forward raises it
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    code = main(["-q", "pretrain", "--out", str(tmp_path / "run"), *TINY_SETS, "--set", "train.accum_steps=2"])
    line = one_error_line(capsys.readouterr().err, "pretrain")
    assert code == 1
    assert line == ("mim pretrain: error: the GPU ran out of memory during pre-training: lower train.batch_size "
                    "(now 16) or raise train.accum_steps (now 2), which keeps the batch and its lr")
    # evaluation: the frozen encoder's features
    from mim.params import EvalParams
    from mim.stages.evaluate import evaluate

    monkeypatch.setattr(MaskedViT, "pooled", out_of_memory)
    d = DataParams(source="synthetic:64", image_size=16)
    vit = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
    with pytest.raises(GpuOutOfMemoryError) as caught:
        evaluate(vit, load_dataset(d.source, "train", size=16), load_dataset(d.source, "test", size=16),
                 EvalParams(batch_size=64), d)
    assert report_error("evaluate", caught.value) == 1
    assert one_error_line(capsys.readouterr().err, "evaluate") == (
        "mim evaluate: error: the GPU ran out of memory during evaluation: lower batch_size (now 64) or "
        "linear.batch_size (now 1024) in params/eval.yaml")
    # raised where no stage said which batch size: the command's param, from report_error
    assert report_error("evaluate", torch.cuda.OutOfMemoryError("CUDA out of memory")) == 1
    assert one_error_line(capsys.readouterr().err, "evaluate") == (
        "mim evaluate: error: the GPU ran out of memory: lower batch_size in params/eval.yaml")


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    """A real SIGINT to this process while `mim pretrain` trains (a run far too long to finish first)."""
    monkeypatch.delenv("MIM_DEBUG", raising=False)
    started = threading.Event()

    def first_step(*args, **kwargs):
        started.set()
        return original(*args, **kwargs)

    original = MAE.forward
    monkeypatch.setattr(MAE, "forward", first_step)

    def interrupt() -> None:  # also when training never started, so that the test fails rather than trains forever
        started.wait(timeout=240)
        os.kill(os.getpid(), signal.SIGINT)

    # a shell starts background jobs with SIGINT ignored, and Python then installs no handler: give it Python's own
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        code = main(["-q", "pretrain", "--out", str(tmp_path / "run"), *TINY_SETS, "--set", "train.steps=100000"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert started.is_set() and code == 130
    assert one_error_line(capsys.readouterr().err, "pretrain") == (
        "mim pretrain: interrupted (Ctrl-C); files it had written are whole (a checkpoint resumes the run)")


def test_torchruns_traceback_stays_when_no_rank_said_why():
    """A rank that crashed (killed, a bug) printed no one-line error: the agent's report is then all there is."""
    import io

    from mim.engine.torchrun_output import forward_torchrun_stderr

    agent = ["E1129 16:10:32.701000 19884 torch/distributed/elastic/multiprocessing/api.py:1002] failed (code -9)\n",
             "Traceback (most recent call last):\n", '  File "run.py", line 1142, in <module>\n', "    main()\n",
             "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n", "=====\n", "mim.cli FAILED\n"]
    out = io.StringIO()
    assert forward_torchrun_stderr(["step 1/9 | loss 1.0\n", *agent], out) is None
    assert out.getvalue() == "".join(["step 1/9 | loss 1.0\n", *agent])
    out = io.StringIO()  # with a rank's line: that line, once
    line = "mim pretrain: error: could not write /x/last.pt: No space left on device (the previous file is kept)\n"
    forward_torchrun_stderr([line, line, *agent], out)
    assert out.getvalue() == line
