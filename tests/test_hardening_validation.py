"""Issue 11, validation that gave tracebacks or misleading messages: training configs and flags,
empty model IDs, broken pipes, and publishing (interrupted draft creation, invalid inputs before
any request, no temp folder left by a killed run)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from samzoo.cli import main
from test_publish_zenodo import mock, proxy, publish, work  # noqa: F401  (fixtures: real zenodo-mock + proxy)

from conftest import one_line_exit_2  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_cache")



@pytest.mark.parametrize("text,needle", [
    ("iterations: abc\n", "iterations must be int"),
    ("freeze: 5\n", "freeze must be list"),
    ("device: 5\n", "device must be str"),
    ("lr: [1]\n", "lr must be float"),
    ("data: [{kind: synthetic, weight: -1}]\n", "weight"),
    ("iterations: [unclosed\n", "invalid YAML (line"),
    ("- a\n- b\n", "mapping"),
    ("max_minutes: -1\n", "max_minutes"),
])
def test_bad_training_configs_are_one_line(capsys, tmp_path, text, needle):
    config = tmp_path / "train.yaml"
    config.write_text(text)
    one_line_exit_2(capsys, ["train", config, "-o", tmp_path / "run"], needle)


def test_non_utf8_training_config(capsys, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_bytes(b"name: \xff\xfe caf\xe9\n")
    one_line_exit_2(capsys, ["train", config], "UTF-8")


@pytest.mark.parametrize("argv,needle", [(["--iterations", "0"], "--iterations"),
                                         (["--max-minutes", "-1"], "--max-minutes"),
                                         (["--max-minutes", "0"], "--max-minutes")])
def test_bad_training_flags(capsys, tmp_path, argv, needle):
    one_line_exit_2(capsys, ["train", "--preset", "test", "-o", tmp_path / "run", *argv], needle)


def test_iterations_flag_is_used_and_truncated_state_is_one_line(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--preset", "test", "-o", str(run), "--iterations", "2"]) == 0
    capsys.readouterr()
    from samzoo import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "latest.pt").metadata["training"]["iteration"] == 2
    state = run / "checkpoints" / "latest_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    one_line_exit_2(capsys, ["train", "--preset", "test", "-o", run, "--iterations", "4"], "--restart")
    assert main(["train", "--preset", "test", "-o", str(run), "--iterations", "1", "--restart", "--out", str(run)]) == 0
    assert "--out is deprecated" in capsys.readouterr().err


def test_empty_model_id(capsys, tmp_path, disks):
    import tifffile

    tifffile.imwrite(tmp_path / "i.tif", disks[0])
    line = one_line_exit_2(capsys, ["segment", tmp_path / "i.tif", "-o", tmp_path / "l.tif", "-m", ""], "empty")
    assert "folder" not in line


def test_models_json_into_a_closed_pipe_has_no_traceback(tmp_path):
    code = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'samzoo.cli', 'models', '--json'], "
            f"stdout=subprocess.PIPE, stderr=subprocess.PIPE); p.stdout.read(5); p.stdout.close(); "
            f"err = p.stderr.read().decode(); p.wait(); print(repr(err))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "SAMZOO_CACHE_DIR": str(tmp_path)})
    assert "Traceback" not in result.stdout and "BrokenPipe" not in result.stdout, result.stdout


# ------------------------------------------------------------------------------------------ publishing


def test_to_zenodo_before_the_package_works(work, capsys):  # noqa: F811
    code = main(["publish", "--to", "zenodo", str(work / "nuclei.zip"), "--card", str(work / "card.yaml"),
                 "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "nuclei.zip" in out


def test_invalid_package_or_checkpoint_is_refused_before_any_request(work, proxy, capsys):  # noqa: F811
    with zipfile.ZipFile(work / "notes.zip", "w") as archive:
        archive.writestr("notes.txt", "not a model package")
    code, _, err = publish(capsys, work, packages=("notes.zip",))
    assert code == 2 and "rdf.yaml" in err
    (work / "broken.pt").write_bytes(b"\x00" * 100)
    code = main(["publish", str(work / "nuclei.zip"), "--to", "zenodo", "--checkpoint", str(work / "broken.pt"),
                 "--card", str(work / "card.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "does not load" in err
    with zipfile.ZipFile(work / "noweights.zip", "w") as archive:
        archive.writestr("rdf.yaml", "type: model\nweights: {pytorch_state_dict: {source: w.pt}}\n")
    code, _, err = publish(capsys, work, packages=("noweights.zip",))
    assert code == 2 and "noweights.zip" in err and err.strip().count("\n") == 0
    assert len(proxy.requests) == 0


def test_lost_create_answer_never_makes_a_second_deposition(work, proxy, capsys):  # noqa: F811
    # the draft is created on the server but its answer never arrives: the same as a kill -9
    # between the request and saving its id
    proxy.fail("POST", r"/api/deposit/depositions$", "reset", times=1, forward=True)
    code, _, err = publish(capsys, work)
    assert code == 2 and "run the same command again" in err
    assert proxy.count("POST", r"/api/deposit/depositions$") == 1
    code, _, err = publish(capsys, work)  # re-run: the draft is looked for, never blindly re-created
    assert code == 2 and "second deposition" in err and err.strip().count("\n") == 0
    assert proxy.count("POST", r"/api/deposit/depositions$") == 1
    code, out, err = publish(capsys, work, "--new-draft")  # the user's explicit decision
    assert code == 0, err
    assert proxy.count("POST", r"/api/deposit/depositions$") == 2


def test_killed_publish_leaves_no_staging_folder(work, capsys):  # noqa: F811
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(tempfile.gettempdir()) / f"samzoo-publish-{dead.pid}-abc123"
    stale.mkdir(exist_ok=True)
    (stale / "README.md").write_text("left by a kill -9")
    assert main(["publish", str(work / "nuclei.zip"), "--to", "zenodo", "--card", str(work / "card.yaml"),
                 "--dry-run"]) == 0
    capsys.readouterr()
    assert not stale.exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"samzoo-publish-{__import__('os').getpid()}-*"))
