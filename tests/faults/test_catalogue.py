"""Bad inputs a new user met, beyond the issue's list: each gives one line and loses nothing."""

from __future__ import annotations

import shutil

from mim.cli.main import main
from tests.helpers import ROOT


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_params_use_keeps_the_files_it_replaces(tmp_path, monkeypatch, capsys):
    params = tmp_path / "params"
    shutil.copytree(ROOT / "params", params)
    monkeypatch.setenv("MIM_PROJECT_DIR", str(tmp_path))
    assert main(["params", "use", "cpu-demo", "--dir", str(params)]) == 0  # the same contents: nothing to keep
    assert "kept in" not in capsys.readouterr().out
    edited = (params / "mae.yaml").read_text().replace("seed: 0", "seed: 7  # my edit")
    (params / "mae.yaml").write_text(edited)
    assert main(["params", "use", "cpu-demo", "--dir", str(params)]) == 0
    out = capsys.readouterr().out
    assert "the files it replaced are kept in" in out and "(mae.yaml)" in out
    backups = list((tmp_path / ".mim" / "params-backup").glob("*/mae.yaml"))
    assert [b.read_text() for b in backups] == [edited]
    assert "my edit" not in (params / "mae.yaml").read_text()


def test_a_mask_that_hides_nothing_or_everything_is_a_params_error(tmp_path, capsys):
    sets = ["--set", "data.source=synthetic:32", "--set", "data.image_size=16", "--set", "train.steps=1",
            "--set", "train.batch_size=8", "--set", "model.patch_size=4"]
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "mae", "--out", str(out), *sets, "--set", "method.mask_ratio=0"]) == 2
    assert "method.mask_ratio" in _one_line(capsys.readouterr().err)
    assert main(["pretrain", "--method", "mae", "--out", str(out), *sets, "--set", "method.mask_ratio=0.99"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "method.mask_ratio 0.99 masks 16 of the 16 tokens at data.image_size 16 (method.mask_count official)" in line
    assert not out.exists()  # refused before anything was written


def test_an_http_source_that_never_answers_times_out_with_one_line(tmp_path, monkeypatch, capsys):
    """A server that accepts the connection and never replies: one line after `HTTP_TIMEOUT_S`, not a hang."""
    import socket

    import mim.io

    monkeypatch.setattr(mim.io, "HTTP_TIMEOUT_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ds"
        code = main(["pretrain", "--method", "mae", "--out", str(tmp_path / "run"), "--set", f"data.source={url}",
                     "--set", "data.image_size=16", "--set", "model.patch_size=4"])
    assert code == 1
    assert _one_line(capsys.readouterr().err).startswith(f"mim pretrain: error: could not reach {url} (")
