"""Voices: the local server's Fish ``GET /model`` list, ``edgespeak voices``, voice ids in use.

Real ``edgespeak serve`` (with a bearer token) answering the real CLI and the official Fish SDK
(package ``fishaudio``, fish-audio-sdk 1.3.0: its pydantic models accepting our answers proves
the shape); the server in-process for the live-protocol checks; the whole stack (Mosquitto,
daemon, ALSA capture) for a voice picked from the list and spoken.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import ormsgpack
import pytest
from aiohttp import web
from fishaudio import FishAudio
from fishaudio.exceptions import APIError, AuthenticationError, NotFoundError

from edgespeak.config import ServerConfig, Settings
from edgespeak.providers.voices import VoicesClient, http_base
from edgespeak.server.app import build_app
from edgespeak.server.models import language_matches
from edgespeak.sources.espeak import EspeakEngine, parse_voices
from edgespeak.wire import fish as fp
from harness.stack import LocalServer, edgespeak_command, free_port
from tests.conftest import Stack, base_env
from tests.test_offline import espeak_pcm

TOKEN = "voices-test-token"
DOOR = "Someone is at the front door."

LISTING = """\
Pty Language       Age/Gender VoiceName          File                 Other Languages
 5  af              --/M      Afrikaans          gmw/af
 5  chr-US-Qaaa-x-west --/M      Cherokee_          iro/chr
 5  cmn             --/M      Chinese_(Mandarin,_latin_as_English) sit/cmn (zh-cmn 5)(zh 5)
 2  en-us           --/F      English_(America)  gmw/en-US            (en 3)
 5  yue             --/M      Chinese_(Cantonese) sit/yue              (zh-yue 5)(zh 8)
 5  yue --/M Chinese_(Cantonese,_latin_as_Jyutping) sit/yue-Latn-jyutping (zh-yue 5)(zh 8)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``edgespeak serve`` with ``[server] token``; yields its port (shared by the module:
    nothing here changes it)."""
    workdir = tmp_path_factory.mktemp("voices-server")
    port = free_port()
    config = workdir / "server.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\ntoken = "{TOKEN}"\n')
    local = LocalServer(config, workdir / "server.log", base_env())
    local.start()
    yield str(port)
    local.stop()


def cli(
    tmp_path: Path, port: str, *args: str, toml: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``edgespeak voices ARGS`` with a config naming the local server only (``[tts] url``
    unset: the embedded default) or ``toml``."""
    config = tmp_path / "cli.toml"
    config.write_text(toml or f'[server]\nhost = "127.0.0.1"\nport = {port}\ntoken = "{TOKEN}"\n')
    return subprocess.run(
        edgespeak_command("voices", *args, "--config", str(config)),
        capture_output=True, text=True, env=base_env(), timeout=60,
    )  # fmt: skip


def test_espeak_listing_parsed_into_unique_speakable_ids() -> None:
    voices = parse_voices(LISTING)
    assert [v.id for v in voices] == ["af", "chr", "cmn", "en-us", "yue", "yue-latn-jyutping"]
    cmn = voices[2]
    assert cmn.languages == ("cmn", "zh-cmn", "zh")
    assert cmn.name == "Chinese (Mandarin, latin as English)"
    assert (voices[3].gender, voices[0].gender) == ("F", "M")
    # The real espeak-ng: ids are unique, have no '/', and are accepted as voices.
    engine = EspeakEngine()
    ids = [v.id for v in engine.voice_list]
    assert len(ids) == len(set(ids)) > 50
    assert all("/" not in i and engine.check_voice(i) == i for i in ids)


def test_language_filter_is_rfc4647_basic_filtering() -> None:
    assert language_matches("en", ["en-us"]) and language_matches("EN-US", ["en-us", "en"])
    assert not language_matches("en", ["eng"]) and not language_matches("en-us", ["en"])


def test_http_base_follows_the_live_url() -> None:
    assert http_base("wss://api.fish.audio/v1/tts/live") == "https://api.fish.audio"
    assert http_base("ws://pi.lan:8765/v1/tts/live") == "http://pi.lan:8765"
    assert http_base("wss://proxy.lan/fish/v1/tts/live") == "https://proxy.lan/fish"
    assert http_base(Settings().tts_url) == "http://127.0.0.1:8765"


async def test_every_listed_voice_is_accepted_as_reference_id() -> None:
    """Each id from GET /model speaks over /v1/tts/live; an unknown one ends at 'start'."""
    app = build_app(ServerConfig(voice="en"))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/model?page_size=1000") as response:
                listed = await response.json()
            ids = [v["_id"] for v in listed["items"]]
            assert len(ids) == listed["total"] > 50
            async with http.ws_connect(f"ws://127.0.0.1:{port}{fp.LIVE_PATH}") as ws:
                silent = [i for i in ids if not await _speaks(ws, i, "1")]
                # No text sent: the refusal comes at 'start' itself.
                request = fp.build_request(format="pcm", sample_rate=None, reference_id="xyz")
                await ws.send_bytes(fp.start(request))
                finish = ormsgpack.unpackb((await ws.receive(timeout=10)).data)
                # The socket still serves the next session.
                assert await _speaks(ws, "en-us", "Hello.")
    finally:
        await runner.cleanup()
    assert silent == []
    assert (finish["event"], finish["reason"]) == ("finish", "error"), finish
    assert "unknown voice 'xyz'" in finish["message"] and "voices list" in finish["message"]


async def _speaks(ws: aiohttp.ClientWebSocketResponse, voice: str, text: str) -> bool:
    """One session in ``voice``: True when it ended with ``stop`` after some audio."""
    request = fp.build_request(format="pcm", sample_rate=None, reference_id=voice)
    for message in (fp.start(request), fp.text(text), fp.stop()):
        await ws.send_bytes(message)
    audio = 0
    while True:
        body = ormsgpack.unpackb((await ws.receive(timeout=10)).data)
        if body["event"] == "audio":
            audio += len(body["audio"])
        elif body["event"] == "finish":
            return body["reason"] == "stop" and audio > 0


def test_cli_lists_only_voices_of_the_language(server: str, tmp_path: Path) -> None:
    table = cli(tmp_path, server, "list", "--language", "en", "--page-size", "100")
    assert table.returncode == 0, table.stderr
    rows = [line.split()[0] for line in table.stdout.splitlines()[1:-1]]
    assert {"en", "en-us", "en-gb-x-rp"} <= set(rows) and "de" not in rows
    assert table.stdout.splitlines()[0].split() == ["id", "title", "languages", "tags"]
    listed = cli(tmp_path, server, "list", "--language", "de", "--json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert page["total"] == len(page["items"]) >= 1
    assert all(language_matches("de", v["languages"]) for v in page["items"])


def test_cli_pages_title_and_tag(server: str, tmp_path: Path) -> None:
    everything = json.loads(cli(tmp_path, server, "list", "--page-size", "1000", "--json").stdout)
    second = json.loads(
        cli(tmp_path, server, "list", "--page-size", "5", "--page", "2", "--json").stdout
    )
    assert second["total"] == everything["total"]
    assert second["items"] == everything["items"][5:10]
    titled = json.loads(
        cli(tmp_path, server, "list", "--title", "received", "--tag", "espeak-ng", "--json").stdout
    )
    assert [v["_id"] for v in titled["items"]] == ["en-gb-x-rp"]
    none = cli(tmp_path, server, "list", "--tag", "no-such-tag")
    assert none.returncode == 0 and "none of 0 voices" in none.stdout
    # Both engines in one list: Piper's voices (the default first), then espeak-ng's.
    assert everything["items"][0]["_id"] == "en_US-joe-medium"
    piper = cli(tmp_path, server, "list", "--tag", "piper", "--language", "en")
    row = piper.stdout.splitlines()[1].split()
    assert row == ["en_US-joe-medium", "en_US-joe-medium", "en-us,en", "piper,medium"]
    assert "1-1 of 1 voices" in piper.stdout


def test_cli_gets_a_voice_and_names_an_unknown_one(server: str, tmp_path: Path) -> None:
    found = cli(tmp_path, server, "get", "en-us")
    assert found.returncode == 0, found.stderr
    assert "English (America)" in found.stdout and "en-us, en" in found.stdout
    missing = cli(tmp_path, server, "get", "no-such-voice")
    assert missing.returncode == 1
    assert "unknown voice 'no-such-voice'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_cli_with_an_explicit_url_and_key(server: str, tmp_path: Path) -> None:
    toml = f'[tts]\nurl = "ws://127.0.0.1:{server}/v1/tts/live"\napi_key = "{TOKEN}"\n'
    found = cli(tmp_path, server, "get", "de", toml=toml)
    assert found.returncode == 0, found.stderr
    assert "German" in found.stdout


def test_cli_wrong_key_and_no_server_fail_clearly(server: str, tmp_path: Path) -> None:
    wrong = "sk-wrong-secret"
    toml = f'[tts]\nurl = "ws://127.0.0.1:{server}/v1/tts/live"\napi_key = "{wrong}"\n'
    refused = cli(tmp_path, server, "list", toml=toml)
    assert refused.returncode == 2
    assert "refused the API key (401" in refused.stderr
    assert wrong not in refused.stderr + refused.stdout and "Traceback" not in refused.stderr
    closed = str(free_port())
    down = cli(tmp_path, closed, "list")
    assert down.returncode == 2
    assert f"cannot reach http://127.0.0.1:{closed}" in down.stderr
    assert "Traceback" not in down.stderr


def test_official_fish_sdk_parses_our_answers(server: str) -> None:
    client = FishAudio(api_key=TOKEN, base_url=f"http://127.0.0.1:{server}")
    english = client.voices.list(language="en", page_size=100)
    assert english.total == len(english.items) >= 5
    assert all(language_matches("en", v.languages) for v in english.items)
    voice = client.voices.get("en-us")
    assert (voice.id, voice.title, voice.type) == ("en-us", "English (America)", "tts")
    tagged = client.voices.list(tags=["espeak-ng", "male"], title="english", page_size=3)
    assert len(tagged.items) == 3 < tagged.total
    assert client.voices.list(self_only=True).total == 0
    with pytest.raises(NotFoundError) as missing:
        client.voices.get("no-such-voice")
    assert missing.value.message == "unknown voice 'no-such-voice'"
    with pytest.raises(APIError) as bad_page:
        client.voices.list(page_size=0)
    assert bad_page.value.status == 400 and "page_size" in bad_page.value.message
    with pytest.raises(AuthenticationError):
        FishAudio(api_key="sk-wrong", base_url=f"http://127.0.0.1:{server}").voices.list()


async def test_a_listed_voice_is_spoken_and_an_unknown_one_fails(stack: Stack) -> None:
    """The daemon speaks an announcement in a voice picked from the list (not the default),
    and fails one in an unknown voice (fallback off) with the server's reason."""
    async with VoicesClient(http_base(stack.tts.url), token=None) as voices:
        [rp] = (await voices.list(title="Received Pronunciation")).items
    async with stack.daemon(stack.config(fallback=False)) as w:
        await w.announce(json.dumps({"text": DOOR, "voice": "no-such-voice", "id": "bad-1"}))
        bad = await w.wait("finished", "failed", ann_id="bad-1")
        await w.announce(json.dumps({"text": DOOR, "voice": rp.id, "id": "rp-1"}))
        good = await w.wait("finished", "failed", ann_id="rp-1")
    assert bad["state"] == "failed"
    assert "unknown voice 'no-such-voice'" in bad["error"] and "voices list" in bad["error"]
    assert (good["state"], good["source"]) == ("finished", "stream"), good
    spoken = stack.capture.read()
    assert spoken == espeak_pcm(DOOR, rp.id) != espeak_pcm(DOOR, "en")
