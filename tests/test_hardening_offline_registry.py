"""``--offline`` and ``--registry`` on every command that resolves a model ID (issue 11): the same
flag, the same help, and they really reach the resolver -- a model in a user registry file that
is served over real HTTP (127.0.0.1) is refused offline with one line (exit 2) and no request,
and found online through ``--registry``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from _hub_servers import hub_env, server, sha256, write_registry  # noqa: F401
from conftest import disk_labels, one_line_exit_2

from samzoo import cli_options
from samzoo.cli import build_parser, main

MODEL_ID = "remote_tiny"
#: every command that turns a model ID into files, and nothing else
RESOLVING = ("segment", "demo", "evaluate", "tune", "package", "train", "fetch", "info", "models")


@pytest.fixture
def remote_registry(hub_env, server, tiny_checkpoint, tmp_path):  # noqa: F811
    """A registry file naming MODEL_ID, whose checkpoint (the tiny test model) the server holds."""
    data = Path(tiny_checkpoint).read_bytes()
    url = server.add("/models/remote_tiny.pt", data)
    return write_registry(tmp_path / "my-registry.yaml", [{
        "id": MODEL_ID, "aliases": [], "architecture": "tiny", "modality": "lm", "description": "test model",
        "citation": "10.1038/s41592-024-02580-4", "model_card": None,
        "files": [{"role": "checkpoint", "url": url, "hash": sha256(data)}]}])


@pytest.fixture
def pair(tmp_path, disks):
    image, centers, radius = disks
    image_path, labels_path = tmp_path / "image.tif", tmp_path / "labels.tif"
    tifffile.imwrite(image_path, image)
    tifffile.imwrite(labels_path, disk_labels(image.shape, centers, radius))
    return image_path, labels_path


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option(p: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in p._actions if flag in a.option_strings), None)


def test_every_resolving_command_has_both_flags_with_one_definition():
    reference = argparse.ArgumentParser()
    cli_options.add_offline(reference)
    cli_options.add_registry(reference)
    subcommands = _subcommands()
    for name in RESOLVING:
        for flag in ("--offline", "--registry"):
            got, want = _option(subcommands[name], flag), _option(reference, flag)
            assert got is not None, f"samzoo {name} has no {flag}"
            assert (got.help, got.metavar, got.default, type(got)) == \
                   (want.help, want.metavar, want.default, type(want)), f"samzoo {name} {flag}"
    # commands that resolve no model ID do not pretend to
    for name in ("publish", "card"):
        assert _option(subcommands[name], "--offline") is None and _option(subcommands[name], "--registry") is None


def _offline_argv(name: str, reg: Path, tmp_path: Path, pair) -> list:
    image, labels = pair
    common = ["--registry", reg, "--offline"]
    if name == "train":
        config = tmp_path / "train.yaml"
        config.write_text(yaml.safe_dump({"init_checkpoint": MODEL_ID, "model": "test", "iterations": 1,
                                          "patch_size": 64}))
        return ["train", config, "-o", tmp_path / "run", *common]
    return {
        "segment": ["segment", image, "-o", tmp_path / "out.tif", "-m", MODEL_ID, *common],
        "demo": ["demo", "-o", tmp_path / "demo", "-m", MODEL_ID, *common],
        "evaluate": ["evaluate", image, labels, "-m", MODEL_ID, *common],
        "tune": ["tune", image, labels, "-m", MODEL_ID, "-o", tmp_path / "tuned.pt", *common],
        "package": ["package", "-m", MODEL_ID, "-o", tmp_path / "packages", *common],
        "fetch": ["fetch", MODEL_ID, *common],
    }[name]


@pytest.mark.parametrize("name", ["segment", "demo", "evaluate", "tune", "package", "train", "fetch"])
def test_offline_refuses_an_uncached_registry_model(name, remote_registry, server, tmp_path, pair, capsys):  # noqa: F811
    """The model is found in the --registry file (else the error would be 'unknown model'), and
    --offline stops its download before any request."""
    line = one_line_exit_2(capsys, _offline_argv(name, remote_registry, tmp_path, pair), MODEL_ID, "offline")
    assert "not in the samzoo cache" in line
    assert server.total_requests == 0


def test_registry_resolves_online_then_offline_uses_the_cache(remote_registry, server, pair, capsys):  # noqa: F811
    image, labels = pair
    argv = ["evaluate", image, labels, "-m", MODEL_ID, "--registry", remote_registry, "--quiet"]
    assert main([str(a) for a in argv]) == 0
    assert "msa" in capsys.readouterr().out.splitlines()[0]
    assert server.hits("/models/remote_tiny.pt") == 1
    assert main([str(a) for a in argv + ["--offline"]]) == 0  # from the cache now
    assert server.total_requests == 1


@pytest.mark.parametrize("name", ["models", "info"])
def test_offline_keeps_registry_urls_unfetched(name, hub_env, server, capsys):  # noqa: F811
    url = server.url("/registry.yaml")
    argv = ["models", "--registry", url, "--offline"] if name == "models" else \
        ["info", MODEL_ID, "--registry", url, "--offline"]
    one_line_exit_2(capsys, argv, "offline")
    assert server.total_requests == 0


def test_train_device_reaches_a_family_trainer(tmp_path, capsys, monkeypatch):
    """`train --device` was ignored for family trainers (SAMCell): now it is checked and passed on."""
    monkeypatch.chdir(tmp_path)
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    one_line_exit_2(capsys, ["train", "--preset", "samcell-tiny-cpu", "--device", "cuda:7", "-o", tmp_path / "run"],
                    "cuda:7", "not available")
    assert not (tmp_path / "run").exists()
