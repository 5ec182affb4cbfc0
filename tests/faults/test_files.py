"""Bad files, folders and URLs given to `mim`, made for real: an output folder that is a file, a read-only file
system, memory://, an fsspec URL whose package is missing, an http server that is stopped or has no such folder,
truncated or damaged encoders, weights, checkpoints, prepared arrays, manifests, centroids and metrics files, an
unknown teacher, a typo in `mim compare`, zero counts for `mim bench`, a fine-tuning batch larger than its subset,
and a stale picture in `mim report`. Each ends with one line naming the file or value and what to do, its exit code,
no traceback, and nothing lost."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mim.cli.main import main, report_error
from mim.data import ImageTensors
from mim.data.prepared import load_prepared, read_manifest, save_prepared
from mim.models.export import export_encoder, write_safetensors
from mim.models.vit import ViTSpec, build_vit
from mim.targets import CentroidTokenizer
from mim.targets.teacher import build_teacher_model, build_timm_teacher, load_weights
from tests.helpers import ROOT, tiny_overrides

TINY_SETS = [a for s in tiny_overrides("mae", **{"data.source": "synthetic:64", "model.depth": 1,
                                                  "train.steps": 2}) for a in ("--set", s)]


def _one_line(capsys: pytest.CaptureFixture, command: str) -> str:
    """The one line `mim <command>` printed on stderr (no traceback, nothing else)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"mim {command}: error: "), err
    return lines[0]


def _reported(capsys: pytest.CaptureFixture, command: str, err: Exception) -> str:
    """The line `report_error` prints for `err` (exit 1)."""
    assert report_error(command, err) == 1
    return _one_line(capsys, command)


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encoder") / "encoder.safetensors"
    export_encoder(build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)), str(path))
    return path


# -- outputs: a file in the way, a read-only file system, memory://, a missing fsspec package -----------------------
@pytest.mark.parametrize("under", ["", "/sub"])
def test_pretrain_out_at_or_under_a_file_is_one_line_before_any_work(tmp_path, capsys, under):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    # a data source that does not exist: an error about it would mean the work started before --out was checked
    code = main(["pretrain", "--method", "mae", *TINY_SETS, "--set", f"data.source={tmp_path}/nodata",
                 "--out", f"{afile}{under}"])
    line = _one_line(capsys, "pretrain")
    assert code == 1 and f"{afile} is a file, not a folder" in line and f"could not write {afile}{under}" in line
    assert afile.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_evaluate_out_under_a_file_fails_before_the_evaluation(tmp_path, capsys, encoder_file):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    code = main(["evaluate", "--encoder", str(encoder_file), "--set", f"data.source={tmp_path}/nodata",
                 "--out", f"{afile}/x.json"])
    line = _one_line(capsys, "evaluate")
    assert code == 1 and line == (f"mim evaluate: error: could not write {afile}/x.json: {afile} is a file, not a "
                                  "folder (nothing was written there)")
    assert afile.read_text() == "keep me\n"


def test_any_output_under_a_file_names_the_file_in_the_way(tmp_path):
    from mim.io import OutputWriteError, write_text

    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputWriteError, match=r"afile/m.json: .*afile is a file, not a folder \(nothing was"):
        write_text(str(tmp_path / "afile" / "m.json"), "{}")


@contextlib.contextmanager
def _read_only_filesystem(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_pretrain_out_on_a_read_only_file_system_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    with _read_only_filesystem(ro):
        code = main(["pretrain", "--method", "mae", *TINY_SETS, "--set", f"data.source={tmp_path}/nodata",
                     "--out", f"{ro}/run"])
        line = _one_line(capsys, "pretrain")
        assert code == 1 and line == (f"mim pretrain: error: could not write {ro}/run: {ro}: Read-only file system "
                                      "(nothing was written there)")
        assert list(ro.iterdir()) == []


def test_pretrain_out_in_memory_is_refused_so_the_outputs_are_not_lost(tmp_path, capsys):
    import fsspec

    code = main(["pretrain", "--method", "mae", *TINY_SETS, "--out", "memory://mim-files-run1"])
    line = _one_line(capsys, "pretrain")
    assert code == 1 and line.startswith("mim pretrain: error: memory://mim-files-run1: files under memory:// vanish "
                                         "when this process exits")
    assert not fsspec.filesystem("memory").exists("/mim-files-run1")


def _missing(package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(importlib.util.find_spec(package) is not None, reason=f"{package} is installed")


@_missing("s3fs")
@pytest.mark.parametrize("where", ["--out", "data.source", "data.shards_url"])
def test_an_s3_url_without_s3fs_names_the_url_and_the_package(tmp_path, capsys, where):
    url = "s3://mim-bucket/x"
    args = {"--out": ["--out", url],
            "data.source": ["--set", f"data.source={url}", "--out", str(tmp_path / "run")],
            "data.shards_url": ["--set", "data.storage=shards", "--set", f"data.shards_url={url}",
                                "--out", str(tmp_path / "run")]}[where]
    code = main(["pretrain", "--method", "mae", *TINY_SETS, *args])
    line = _one_line(capsys, "pretrain")
    assert code == 1 and url in line and line.endswith("s3:// URLs need the s3fs package (pip install s3fs)")


@_missing("gcsfs")
def test_a_gs_url_without_gcsfs_names_the_package(capsys):
    assert main(["pretrain", "--method", "mae", *TINY_SETS, "--out", "gs://mim-bucket/run"]) == 1
    assert _one_line(capsys, "pretrain") == ("mim pretrain: error: gs://mim-bucket/run: gs:// URLs need the gcsfs "
                                             "package (pip install gcsfs)")


# -- http(s) sources and weights: a server that does not answer vs a folder it does not have -----------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # the server's access log would mix with mim's stderr
        pass


@contextlib.contextmanager
def _http_server(folder: Path) -> Iterator[int]:
    handler = lambda *a: _QuietHandler(*a, directory=str(folder))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _port_nobody_listens_on() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_http_source_that_does_not_exist_vs_one_that_cannot_be_reached(tmp_path, capsys):
    with _http_server(tmp_path) as port:
        assert main(["pretrain", "--method", "mae", *TINY_SETS, "--set", f"data.source=http://127.0.0.1:{port}/ds",
                     "--out", str(tmp_path / "run")]) == 1
        assert _one_line(capsys, "pretrain") == (f"mim pretrain: error: image folder 'http://127.0.0.1:{port}/ds' "
                                                 "does not exist")
    # the same server, now really stopped
    assert main(["pretrain", "--method", "mae", *TINY_SETS, "--set", f"data.source=http://127.0.0.1:{port}/ds",
                 "--out", str(tmp_path / "run")]) == 1
    line = _one_line(capsys, "pretrain")
    assert line.startswith(f"mim pretrain: error: could not reach http://127.0.0.1:{port}/ds (Cannot connect to "
                           f"host 127.0.0.1:{port}"), line


def test_teacher_weights_at_an_unreachable_url_name_the_url_and_the_cause(capsys):
    url = f"http://127.0.0.1:{_port_nobody_listens_on()}/w.pth"
    with pytest.raises(OSError) as caught:
        build_teacher_model("timm", "efficientnet_lite0", url)
    line = _reported(capsys, "teacher", caught.value)
    assert line.startswith(f"mim teacher: error: could not reach {url} (Cannot connect to host"), line


# -- damaged encoders, weights and checkpoints ----------------------------------------------------------------------
def test_evaluate_encoder_a_folder_is_one_line(tmp_path, capsys):
    assert main(["evaluate", "--encoder", str(tmp_path)]) == 1
    assert _one_line(capsys, "evaluate") == (f"mim evaluate: error: {tmp_path} is a folder, not the exported "
                                             "encoder file")


def test_a_truncated_encoder_or_teacher_file_names_the_file(tmp_path, capsys, encoder_file):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(encoder_file.read_bytes()[:3000])  # a copy or download stopped half-way
    assert main(["evaluate", "--encoder", str(cut)]) == 1
    assert _one_line(capsys, "evaluate") == (
        f"mim evaluate: error: {cut}: not a readable safetensors file: incomplete metadata, file not fully covered "
        "(cut short or damaged; copy or download it again)")
    with pytest.raises(ValueError) as caught:
        load_weights(str(cut))
    assert _reported(capsys, "teacher", caught.value).startswith(
        f"mim teacher: error: {cut}: not a readable safetensors file: incomplete metadata")


def _encoder_with_metadata(path: Path, **meta: str) -> Path:
    state = {"w": torch.zeros(2)}
    with path.open("wb") as f:
        write_safetensors(f, state, {"format": "mim-encoder/1", **meta})
    return path


@pytest.mark.parametrize("meta, expected", [
    ({"arch": "vit"}, "the metadata has no 'spec' key"),
    ({"arch": "vit", "spec": "{not json"}, "the metadata's spec is not JSON"),
    ({"arch": "hier", "spec": json.dumps({"img_size": 16, "depth": 1})}, "metadata spec key 'depth' is not one mim"),
    ({"arch": "nosuch", "spec": "{}"}, "unknown encoder architecture 'nosuch' (known: vit, cnn, hier)"),
])
def test_broken_encoder_metadata_names_the_file_and_the_key(tmp_path, capsys, meta, expected):
    path = _encoder_with_metadata(tmp_path / "meta.safetensors", **meta)
    assert main(["evaluate", "--encoder", str(path)]) == 1
    line = _one_line(capsys, "evaluate")
    assert line.startswith(f"mim evaluate: error: {path}: {expected}"), line


def test_a_garbage_checkpoint_names_the_file_without_torchs_unsafe_advice(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"garbage\n")
    assert main(["pretrain", "--method", "mae", *TINY_SETS, "--out", str(out), "--resume"]) == 1
    line = _one_line(capsys, "pretrain")
    assert line == (f"mim pretrain: error: {out}/checkpoints/last.pt: not a readable checkpoint (UnpicklingError: "
                    "Unsupported operand 103); the file is damaged or not a mim checkpoint: remove it to start over")
    assert (out / "checkpoints" / "last.pt").read_bytes() == b"garbage\n"


def test_an_unknown_teacher_model_names_it_and_how_to_list_them(capsys):
    with pytest.raises(ValueError) as caught:
        build_timm_teacher("efficientnet_lite1x", "random")
    line = _reported(capsys, "teacher", caught.value)
    assert line.startswith("mim teacher: error: teacher name 'efficientnet_lite1x': timm has no such model (close: "
                           "efficientnet_lite1") and line.endswith("list them with timm.list_models('*efficientnet*'))")


# -- damaged prepared data, tokenizer and metrics files -------------------------------------------------------------
def _prepared(root: Path) -> Path:
    images = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    save_prepared(root, {"train": ImageTensors(images=images, labels=torch.zeros(8, dtype=torch.int64),
                                               classes=["a"], source="test")})
    return root


def test_a_truncated_prepared_array_or_manifest_names_the_file_and_how_to_rebuild(tmp_path, capsys):
    root = _prepared(tmp_path / "prepared")
    npy = root / "train_images.npy"
    npy.write_bytes(npy.read_bytes()[:500])
    with pytest.raises(ValueError) as caught:
        load_prepared(root, "train")
    line = _reported(capsys, "pretrain", caught.value)
    assert line.startswith(f"mim pretrain: error: {npy}: not a readable .npy array (") and line.endswith(
        "; rebuild it with `dvc repro prepare` (or `mim prepare`)"), line
    manifest = root / "manifest.json"
    manifest.write_text('{"format": "mim-prep')
    with pytest.raises(ValueError) as caught:
        read_manifest(root)
    line = _reported(capsys, "pretrain", caught.value)
    assert line.startswith(f"mim pretrain: error: {manifest}: not valid JSON (") and "dvc repro prepare" in line


def test_truncated_tokenizer_centroids_name_the_file_and_how_to_rebuild(tmp_path, capsys):
    patches = torch.rand(64, 48, generator=torch.Generator().manual_seed(0))
    CentroidTokenizer.build(patches, 4, iters=2, patch_size=4, channels=3, verbose=False).save(tmp_path)
    centroids = tmp_path / "centroids.npy"
    centroids.write_bytes(centroids.read_bytes()[:100])
    with pytest.raises(ValueError) as caught:
        CentroidTokenizer.load(tmp_path)
    line = _reported(capsys, "pretrain", caught.value)
    assert line.startswith(f"mim pretrain: error: {centroids}: not a readable .npy array (") and line.endswith(
        "rebuild it with `dvc repro tokenizer` (or `mim tokenizer`)"), line


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project (dvc.yaml and params/) as the working directory, tracking off."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIM_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("MIM_TRACKING", "off")
    return tmp_path


@pytest.mark.parametrize("text, expected", [
    ('{"knn_top1": ', "not valid JSON (Expecting value: line 1 column 14 (char 13))"),
    ('{"knn_top1": "abc", "linear_top1": 50.0}', "knn_top1 is 'abc', not a number"),
    ("{}", "empty (no metrics in it)"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"knn_top1": 50.0}', "incomplete (no linear_top1)"),
])
@pytest.mark.parametrize("command", ["compare", "report"])
def test_a_damaged_metrics_file_names_it_and_the_stage_to_rerun(project, capsys, text, expected, command):
    path = project / "metrics" / "evaluate" / "mae" / "seed-0.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert main([command]) == 1
    shown = path if command == "compare" else path.relative_to(project)  # report reads the working directory
    assert _one_line(capsys, command) == (f"mim {command}: error: {shown}: {expected}; re-run "
                                          "`dvc repro evaluate@mae-0`")
    assert not (project / "reports" / "comparison.md").exists()


def test_compare_with_a_typo_names_the_unknown_method_and_the_known_ones(project, capsys):
    assert main(["compare", "mea"]) == 2
    line = _one_line(capsys, "compare")
    assert line == ("mim compare: error: unknown method 'mea': params/pipeline.yaml runs mae, ccvit, img2vec, cim, "
                    "mixmim, dmjd")


def test_report_drops_a_reconstruction_picture_whose_source_is_gone(project, capsys):
    src = project / "plots" / "pretrain" / "mae" / "seed-0" / "reconstructions.png"
    src.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(src)
    copy = project / "reports" / "reconstructions" / "mae.png"
    assert main(["-q", "report"]) == 0
    assert copy.is_file() and "reconstructions/mae.png" in (project / "reports" / "comparison.md").read_text()
    src.unlink()
    assert main(["-q", "report"]) == 0
    assert not copy.exists() and "reconstructions/mae.png" not in (project / "reports" / "comparison.md").read_text()
    src.write_bytes(b"not a picture")
    assert main(["-q", "report"]) == 0
    assert not copy.exists()


# -- counts and sizes given on the command line ---------------------------------------------------------------------
@pytest.mark.parametrize("argv, flag", [(["masks", "--batch", "0"], "--batch"), (["tokenizer", "--k", "0"], "--k"),
                                        (["data", "--images", "0"], "--images"),
                                        (["masks", "--batch", "x"], "--batch")])
def test_bench_counts_must_be_positive_whole_numbers(capsys, argv, flag):
    with pytest.raises(SystemExit) as stopped:
        main(["bench", *argv])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"mim bench {argv[0]}: error: argument {flag}: expected a whole number "
                                            f">= 1, got {argv[2] if argv[2] == '0' else repr(argv[2])}")


def test_finetune_batch_above_its_subset_names_both_params(capsys, tmp_path):
    from mim.params.edit import edit_yaml_text

    params = tmp_path / "params"  # the stage form takes no --set: the values go in its params file
    shutil.copytree(ROOT / "params", params, ignore=shutil.ignore_patterns("sets"))
    transfer = params / "transfer.yaml"
    transfer.write_text(edit_yaml_text(transfer.read_text(), {"finetune.batch_size": 64,
                                                              "finetune.train_subset": 32})[0])
    assert main(["transfer", "--method", "mae", "--seed", "0", "--params-dir", str(params)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().endswith("finetune: batch_size 64 is larger than train_subset 32: lower finetune.batch_size "
                                "or raise finetune.train_subset"), err


def test_finetune_batch_above_the_training_images_names_the_param():
    from mim.data import BatchAugment
    from mim.evaluation.finetune import finetune

    data = ImageTensors(images=torch.zeros(8, 3, 16, 16, dtype=torch.uint8), labels=torch.tensor([0, 1] * 4),
                        classes=["x", "y"], source="zeros")
    with pytest.raises(ValueError, match=r"^finetune.batch_size 16 is larger than the 8 training images"):
        finetune(torch.nn.Identity(), data, data, BatchAugment(out_size=16), batch_size=16, device="cpu")


def test_numpy_is_only_read_without_pickles(tmp_path):
    from mim.io import DamagedFileError, load_npy

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DamagedFileError, match=r"obj.npy: not a readable .npy array \(Object arrays cannot be"):
        load_npy(tmp_path / "obj.npy", "rebuild it")
