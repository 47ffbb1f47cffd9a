"""Downloads of registry models over real HTTP (127.0.0.1): caching, verification, concurrency,
broken transfers, offline mode, micro-sam cache reuse, URLs with hashes, cache list/clear."""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _hub_servers import FileServer, hub_env, server, sha256, write_registry, xxh128  # noqa: F401

from samzoo.errors import DownloadError, HashMismatchError, ModelNotFoundError, OfflineError, SamzooError
from samzoo.hub import cache_clear, cache_list, fetch, fetch_files, model_info

SRC = Path(__file__).resolve().parents[1] / "src"
CKPT = os.urandom(300_000)
DECODER = os.urandom(50_000)


def _registry(tmp_path, srv, *, ckpt_hash=None, decoder=True, model_id="test_lm", extra_file=None) -> Path:
    files = [{"role": "checkpoint", "url": srv.url("/m/vit_b.pt"), "hash": ckpt_hash or xxh128(CKPT),
              "microsam_name": f"{model_id}"}]
    if decoder:
        files.append({"role": "decoder", "url": srv.url("/m/vit_b_decoder.pt"), "hash": xxh128(DECODER),
                      "microsam_name": f"{model_id}_decoder"})
    if extra_file:
        files[0].update(extra_file)
    return write_registry(tmp_path / "reg.yaml", [{
        "id": model_id, "aliases": ["Tiny-Alias/1.0"], "architecture": "vit_b", "modality": "lm",
        "description": "test model", "citation": "10.1038/s41592-024-02580-4", "model_card": None, "files": files}])


def _serve_model(srv: FileServer, behaviour: str | None = None) -> None:
    srv.add("/m/vit_b.pt", CKPT, behaviour)
    srv.add("/m/vit_b_decoder.pt", DECODER)


def _no_files_left(cache: Path, model_id: str = "test_lm") -> bool:
    folder = cache / "models" / model_id
    if not folder.exists():
        return True
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
    partials = list((folder / ".samzoo").glob("*.part-*")) if (folder / ".samzoo").exists() else []
    return not visible and not partials


def test_first_fetch_downloads_second_uses_cache_with_server_stopped(hub_env, tmp_path):
    srv = FileServer().start()
    _serve_model(srv)
    reg = _registry(tmp_path, srv)
    files = fetch_files("test_lm", registry=reg, progress=False)
    assert files["checkpoint"].read_bytes() == CKPT
    assert files["decoder"].read_bytes() == DECODER
    assert files["checkpoint"].is_relative_to(hub_env / "models" / "test_lm")
    assert srv.hits("/m/vit_b.pt") == 1 and srv.hits("/m/vit_b_decoder.pt") == 1
    srv.stop()
    # no server any more: the cache answers, by ID and by alias (case-insensitive)
    assert fetch("test_lm", registry=reg, progress=False) == files["checkpoint"]
    assert fetch("tiny-alias/1.0", registry=reg, progress=False) == files["checkpoint"]
    assert fetch_files("TEST_LM", registry=reg)["decoder"] == files["decoder"]


def test_user_registry_from_env(hub_env, server, tmp_path, monkeypatch):
    _serve_model(server)
    reg = _registry(tmp_path, server)
    monkeypatch.setenv("SAMZOO_REGISTRY", str(reg))
    assert fetch("test_lm", progress=False).read_bytes() == CKPT


def test_wrong_hash_fails_and_caches_nothing(hub_env, server, tmp_path):
    _serve_model(server)
    reg = _registry(tmp_path, server, ckpt_hash=xxh128(b"something else"))
    with pytest.raises(HashMismatchError) as info:
        fetch("test_lm", registry=reg, progress=False)
    msg = str(info.value)
    assert isinstance(info.value, ModelNotFoundError)
    assert "test_lm" in msg and server.url("/m/vit_b.pt") in msg and "nothing was cached" in msg
    assert xxh128(b"something else") in msg and xxh128(CKPT) in msg
    assert _no_files_left(hub_env)
    # and it stays failed (nothing half-trusted left behind)
    with pytest.raises(HashMismatchError):
        fetch("test_lm", registry=reg, progress=False)
    assert server.hits("/m/vit_b.pt") == 2


def test_eight_processes_download_once(hub_env, tmp_path):
    srv = FileServer().start()
    srv.slow_chunk, srv.slow_delay = 32_768, 0.03  # ~0.3 s transfer: the others must wait on the lock
    _serve_model(srv, "slow")
    reg = _registry(tmp_path, srv)
    # import samzoo.hub without samzoo/__init__ (which imports torch): keeps 8 processes fast
    code = textwrap.dedent(f"""
        import sys, types
        pkg = types.ModuleType("samzoo"); pkg.__path__ = [{str(SRC / 'samzoo')!r}]; sys.modules["samzoo"] = pkg
        from samzoo.hub import fetch
        print(fetch("test_lm", registry={str(reg)!r}, progress=False))
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=180) for p in procs]  # each child imports torch and the families
    srv.stop()
    assert [p.returncode for p in procs] == [0] * 8, [o[1][-500:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == CKPT
    assert srv.hits("/m/vit_b.pt") == 1
    assert srv.hits("/m/vit_b_decoder.pt") == 1


def test_interrupted_transfer_is_retried(hub_env, server, tmp_path):
    _serve_model(server, "truncate_once")
    reg = _registry(tmp_path, server)
    path = fetch("test_lm", registry=reg, progress=False)
    assert path.read_bytes() == CKPT
    assert server.hits("/m/vit_b.pt") == 2


def test_interrupted_transfer_fails_cleanly(hub_env, server, tmp_path):
    _serve_model(server, "truncate")
    reg = _registry(tmp_path, server)
    with pytest.raises(DownloadError) as info:
        fetch("test_lm", registry=reg, progress=False)
    msg = str(info.value)
    assert "test_lm" in msg and "broke off" in msg and "nothing was cached" in msg
    assert server.hits("/m/vit_b.pt") == 2  # SAMZOO_DOWNLOAD_RETRIES=1
    assert _no_files_left(hub_env)


def test_killed_download_leaves_nothing_trusted(hub_env, tmp_path):
    srv = FileServer().start()
    srv.slow_chunk, srv.slow_delay = 8192, 0.05  # ~2 s transfer
    _serve_model(srv, "slow")
    reg = _registry(tmp_path, srv)
    code = textwrap.dedent(f"""
        import sys, types
        pkg = types.ModuleType("samzoo"); pkg.__path__ = [{str(SRC / 'samzoo')!r}]; sys.modules["samzoo"] = pkg
        from samzoo.hub import fetch
        fetch("test_lm", registry={str(reg)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = hub_env / "models" / "test_lm" / ".samzoo"
    deadline = time.time() + 90  # the child imports torch and the family registry first (seconds under load)
    while time.time() < deadline and not any(p.stat().st_size > 60_000 for p in meta.glob("*.part-*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(meta.glob("vit_b*.part-*")) or list(meta.glob("test_lm*.part-*")), "download never started"
    assert _no_files_left(hub_env) is False  # the partial file is there ...
    assert not (hub_env / "models" / "test_lm" / "test_lm.pt").exists()  # ... but nothing under its name
    with pytest.raises(OfflineError):  # and nothing a later run trusts
        fetch("test_lm", registry=reg, offline=True)
    srv.behaviour.clear()
    path = fetch("test_lm", registry=reg, progress=False)
    assert path.read_bytes() == CKPT
    assert not list(meta.glob("test_lm.pt.part-*"))  # the stale partial was removed
    srv.stop()


def test_offline_never_connects(hub_env, server, tmp_path, monkeypatch):
    _serve_model(server)
    reg = _registry(tmp_path, server)
    monkeypatch.setenv("SAMZOO_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        fetch("test_lm", registry=reg)
    msg = str(info.value)
    assert "samzoo fetch test_lm" in msg and "SAMZOO_CACHE_DIR" in msg and str(hub_env) in msg
    assert server.total_requests == 0
    # online fetch, then offline works from the cache, still without requests
    monkeypatch.delenv("SAMZOO_OFFLINE")
    path = fetch("test_lm", registry=reg, progress=False)
    n = server.total_requests
    assert fetch("test_lm", registry=reg, offline=True) == path
    monkeypatch.setenv("SAMZOO_OFFLINE", "1")
    assert fetch("test_lm", registry=reg) == path
    assert server.total_requests == n


def test_offline_argument_overrides_env(hub_env, server, tmp_path, monkeypatch):
    _serve_model(server)
    reg = _registry(tmp_path, server)
    with pytest.raises(OfflineError):
        fetch("test_lm", registry=reg, offline=True)
    assert server.total_requests == 0
    monkeypatch.setenv("SAMZOO_OFFLINE", "1")
    assert fetch("test_lm", registry=reg, offline=False, progress=False).read_bytes() == CKPT


def test_404_message(hub_env, server, tmp_path):
    reg = _registry(tmp_path, server)  # nothing served
    with pytest.raises(DownloadError) as info:
        fetch("test_lm", registry=reg, progress=False)
    msg = str(info.value)
    assert "test_lm" in msg and "404" in msg and server.url("/m/vit_b.pt") in msg and "samzoo info test_lm" in msg
    assert server.hits("/m/vit_b.pt") == 1  # a 404 is not retried


def test_timeout_message(hub_env, server, tmp_path, monkeypatch):
    server.hang_s = 6.0
    _serve_model(server, "hang")
    reg = _registry(tmp_path, server)
    monkeypatch.setenv("SAMZOO_DOWNLOAD_TIMEOUT", "0.4")
    monkeypatch.setenv("SAMZOO_DOWNLOAD_RETRIES", "0")
    t0 = time.time()
    with pytest.raises(DownloadError) as info:
        fetch("test_lm", registry=reg, progress=False)
    assert time.time() - t0 < 5.0  # gave up long before the server answered
    msg = str(info.value)
    assert "timed out" in msg and "test_lm" in msg and "SAMZOO_DOWNLOAD_TIMEOUT" in msg
    assert _no_files_left(hub_env)


def test_microsam_cache_is_reused(hub_env, server, tmp_path):
    _serve_model(server)
    reg = _registry(tmp_path, server)
    msam = Path(os.environ["MICROSAM_CACHEDIR"]) / "models"
    msam.mkdir(parents=True)
    (msam / "test_lm").write_bytes(CKPT)
    (msam / "test_lm_decoder").write_bytes(b"an older decoder version")  # wrong hash: not reused
    files = fetch_files("test_lm", registry=reg, progress=False)
    assert files["checkpoint"].read_bytes() == CKPT
    assert server.hits("/m/vit_b.pt") == 0
    assert server.hits("/m/vit_b_decoder.pt") == 1
    assert files["decoder"].read_bytes() == DECODER
    assert (msam / "test_lm_decoder").read_bytes() == b"an older decoder version"  # left alone


def test_microsam_cache_reused_offline(hub_env, server, tmp_path):
    _serve_model(server)
    reg = _registry(tmp_path, server, decoder=False)
    msam = Path(os.environ["MICROSAM_CACHEDIR"]) / "models"
    msam.mkdir(parents=True)
    (msam / "test_lm").write_bytes(CKPT)
    assert fetch("test_lm", registry=reg, offline=True).read_bytes() == CKPT
    assert server.total_requests == 0


def test_stale_record_rehashes_and_corrupt_file_is_replaced(hub_env, server, tmp_path):
    _serve_model(server)
    reg = _registry(tmp_path, server, decoder=False)
    path = fetch("test_lm", registry=reg, progress=False)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # e.g. the cache was copied without times
    assert fetch("test_lm", registry=reg, offline=True) == path  # re-hashed, still trusted
    path.write_bytes(b"x" * len(CKPT))  # corrupted on disk
    with pytest.raises(OfflineError):
        fetch("test_lm", registry=reg, offline=True)
    assert fetch("test_lm", registry=reg, progress=False).read_bytes() == CKPT
    assert server.hits("/m/vit_b.pt") == 2


def test_size_mismatch_is_a_failed_transfer(hub_env, server, tmp_path):
    _serve_model(server)
    reg = _registry(tmp_path, server, decoder=False, extra_file={"size": len(CKPT) + 1})
    with pytest.raises(DownloadError, match="expected"):
        fetch("test_lm", registry=reg, progress=False)
    assert _no_files_left(hub_env)


def test_url_with_sha256_fragment(hub_env, server):
    data = b"checkpoint bytes" * 1000
    url = server.add("/files/model.pth", data)
    digest = hashlib.sha256(data).hexdigest()
    path = fetch(f"{url}#sha256={digest}", progress=False)
    assert path.read_bytes() == data and path.name == "model.pth"
    server.stop()
    assert fetch(f"{url}#sha256={digest}") == path


def test_url_with_wrong_fragment_hash(hub_env, server):
    url = server.add("/files/model.pth", b"data")
    with pytest.raises(HashMismatchError, match="sha256:" + "0" * 64):
        fetch(f"{url}#sha256={'0' * 64}", progress=False)
    assert not list((hub_env / "url").rglob("model.pth"))


def test_url_without_hash_warns_and_caches(hub_env, server):
    url = server.add("/files/package.zip", b"PK not really a zip")
    with pytest.warns(UserWarning, match="without a known hash"):
        files = fetch_files(url, progress=False)
    assert set(files) == {"package"} and files["package"].read_bytes() == b"PK not really a zip"
    assert fetch_files(url, offline=True) == files
    assert server.hits("/files/package.zip") == 1


def test_package_relative_registry_files(hub_env, tmp_path):
    weights = tmp_path / "weights" / "mine.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"local weights")
    reg = write_registry(tmp_path / "reg.yaml", [{
        "id": "local_model", "architecture": "tiny", "modality": "lm",
        "files": [{"role": "checkpoint", "url": "weights/mine.pt", "hash": sha256(b"local weights")}]}])
    assert fetch("local_model", registry=reg, offline=True) == weights.resolve()
    weights.write_bytes(b"changed")
    with pytest.raises(ModelNotFoundError, match="does not match the registry hash"):
        fetch("local_model", registry=reg)
    reg2 = write_registry(tmp_path / "reg2.yaml", [{
        "id": "gone", "architecture": "tiny", "modality": "lm",
        "files": [{"role": "checkpoint", "url": "package://samzoo/data/no-such-file.pt"}]}])
    with pytest.raises(ModelNotFoundError, match="reinstall samzoo"):
        fetch("gone", registry=reg2)


def test_shipped_default_model_points_into_the_package(hub_env):
    shipped = SRC / "samzoo" / "data" / "samzoo-lm-tiny.pt"
    if shipped.is_file():
        assert fetch("samzoo-lm-tiny", offline=True).resolve() == shipped.resolve()
    else:
        with pytest.raises(ModelNotFoundError, match="samzoo-lm-tiny.*reinstall samzoo"):
            fetch("samzoo-lm-tiny", offline=True)


def test_model_info_cache_list_and_clear(hub_env, server, tmp_path):
    _serve_model(server)
    reg = _registry(tmp_path, server)
    info = model_info("test_lm", registry=reg)
    assert info["kind"] == "registry" and info["local"] is None and info["architecture"] == "vit_b"
    files = fetch_files("test_lm", registry=reg, progress=False)
    info = model_info("Tiny-Alias/1.0", registry=reg)
    assert info["id"] == "test_lm" and info["local"] == {k: str(v) for k, v in files.items()}
    items = cache_list()
    assert [(i.kind, i.id) for i in items] == [("registry", "test_lm")]
    assert items[0].size == len(CKPT) + len(DECODER)
    removed = cache_clear("test_lm", registry=reg)
    assert removed == [hub_env / "models" / "test_lm"] and cache_list() == []
    fetch("test_lm", registry=reg, progress=False)
    assert cache_clear() == [hub_env / "models"]
    assert cache_list() == []


def _cli(argv: list[str]) -> int:
    from samzoo.hub.cli import register

    parser = argparse.ArgumentParser(prog="samzoo")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_fetch_cache_and_errors(hub_env, server, tmp_path, capsys):
    _serve_model(server)
    reg = str(_registry(tmp_path, server))
    assert _cli(["fetch", "test_lm", "--registry", reg, "-q"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(hub_env / "models" / "test_lm" / "test_lm.pt")
    assert _cli(["fetch", "test_lm", "--registry", reg, "--offline", "--all"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("checkpoint\t") and lines[1].startswith("decoder\t")
    assert _cli(["cache", "list"]) == 0
    assert "test_lm" in capsys.readouterr().out
    assert _cli(["cache", "clear"]) == 0
    assert "removed" in capsys.readouterr().out
    with pytest.raises(SamzooError):
        _cli(["fetch", "test_lm", "--registry", reg, "--offline"])
    with pytest.raises(ModelNotFoundError, match="did you mean 'test_lm'"):
        _cli(["fetch", "test_lmm", "--registry", reg])
