"""espeak-ng engine: text → bytes of s16le mono PCM at 22050 Hz, streamed as it synthesises.

Runs ``espeak-ng --stdout`` (Debian package ``espeak-ng``) with the text on stdin, so text that
starts with ``-`` is never taken for an option; its WAV header is parsed and the PCM that
follows is yielded chunk by chunk while espeak-ng is still working on later clauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from edgespeak.audio.formats import WavStreamDecoder
from edgespeak.base.errors import TtsError, TtsProtocolError

ESPEAK_RATE_HZ = 22050
ESPEAK_WPM = 175  # espeak-ng's default speaking rate, words per minute
READ_BYTES = 4096


class EngineError(TtsError):
    """The engine failed (not installed, unknown voice, crashed)."""


@dataclass(frozen=True)
class EspeakVoice:
    """One voice from ``espeak-ng --voices``.

    ``id``: the voice file's base name, lower-cased (``en-us``, ``en`` for ``gmw/en``), a valid
    ``-v`` argument for every voice (language codes are not: ``chr-US-Qaaa-x-west`` is refused,
    and ``yue`` names two voices). ``language``: espeak-ng's language code, lower-cased;
    ``other_languages``: the further codes it lists (``(zh-cmn 5)(zh 5)`` → ``zh-cmn``, ``zh``).
    ``gender``: ``"M"``, ``"F"`` or ``""`` (unknown). ``name``: ``_`` shown as spaces,
    ``English (America)``.
    """

    id: str
    language: str
    other_languages: tuple[str, ...]
    gender: str
    name: str
    file: str

    @property
    def languages(self) -> tuple[str, ...]:
        """The language code and the other languages, without repeats."""
        return tuple(dict.fromkeys((self.language, *self.other_languages)))


_OTHER_LANGUAGE = re.compile(r"\(([^\s()]+)\s+\d+\)")


def parse_voices(listing: str) -> list[EspeakVoice]:
    """The voices in ``espeak-ng --voices`` output (columns ``Pty Language Age/Gender VoiceName
    File [Other Languages]``; names use ``_`` for spaces), in its order. A voice whose id was
    already taken is left out."""
    voices: dict[str, EspeakVoice] = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        language, age_gender, name, file = fields[1:5]
        voice_id = file.rsplit("/", 1)[-1].lower()
        gender = age_gender.rsplit("/", 1)[-1]
        voices.setdefault(
            voice_id,
            EspeakVoice(
                id=voice_id,
                language=language.lower(),
                other_languages=tuple(
                    code.lower() for code in _OTHER_LANGUAGE.findall(" ".join(fields[5:]))
                ),
                gender=gender if gender in ("M", "F") else "",
                name=name.replace("_", " "),
                file=file,
            ),
        )
    return list(voices.values())


class EspeakEngine:
    """Streams speech from the ``espeak-ng`` binary.

    ``voice`` is an espeak-ng voice name (``en``, ``en-us``, ``de`` …), used when a request
    names none. ``voice_list``: the installed voices (:func:`parse_voices`).
    """

    rate_hz = ESPEAK_RATE_HZ

    def __init__(self, voice: str = "en", binary: str = "espeak-ng") -> None:
        path = shutil.which(binary)
        if path is None:
            raise EngineError(f"{binary} is not installed (apt-get install espeak-ng)")
        self._binary = path
        self.voice_list = _list_voices(path)
        self.voices = frozenset(
            name.lower()
            for v in self.voice_list
            for name in (v.id, v.language, v.name.replace(" ", "_"), v.file)
        )
        self.voice = self.check_voice(voice)

    def check_voice(self, voice: str) -> str:
        """Return ``voice`` if espeak-ng has it (language code, name or file, optionally with a
        ``+variant``), else raise EngineError. espeak-ng itself would guess (``no-such-voice``
        speaks Norwegian), so an unknown voice is refused here instead."""
        if voice.split("+", 1)[0].lower() not in self.voices:
            raise EngineError(f"unknown voice {voice!r}; see `espeak-ng --voices` for the list")
        return voice

    async def synthesize(
        self, text: str, voice: str | None = None, *, speed: float = 1.0
    ) -> AsyncGenerator[bytes, None]:
        """Yield bytes of s16le mono PCM at 22050 Hz for ``text``, as espeak-ng produces them.

        ``speed``: speaking-rate multiplier (``-s`` = 175 words per minute times speed; at 1.0 no
        ``-s`` is passed, so the output is exactly espeak-ng's default).
        Raises EngineError when espeak-ng fails (e.g. an unknown voice), with its message.
        The process is killed if the consumer stops early.
        """
        voice = self.check_voice(voice) if voice else self.voice
        rate = ["-s", str(round(ESPEAK_WPM * speed))] if speed != 1.0 else []
        proc = await asyncio.create_subprocess_exec(
            self._binary, "--stdout", "-b", "1", "-v", voice, *rate,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(text.encode("utf-8"))
            proc.stdin.close()
            wav = WavStreamDecoder()
            while chunk := await proc.stdout.read(READ_BYTES):
                pcm = wav.feed(chunk)
                if pcm:
                    yield pcm
            stderr = (await proc.stderr.read()).decode("utf-8", "replace").strip()
            if await proc.wait() != 0:
                raise EngineError(f"espeak-ng failed: {stderr or 'exit ' + str(proc.returncode)}")
            if wav.rate_hz is not None and wav.rate_hz != ESPEAK_RATE_HZ:
                raise TtsProtocolError(f"espeak-ng produced {wav.rate_hz} Hz, expected 22050")
            tail = wav.finish()
            if tail:
                yield tail
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def _list_voices(binary: str) -> list[EspeakVoice]:
    """The voices ``espeak-ng --voices`` lists; EngineError when there are none."""
    out = subprocess.run([binary, "--voices"], capture_output=True, text=True, check=False)
    voices = parse_voices(out.stdout)
    if not voices:
        raise EngineError(f"espeak-ng lists no voices: {out.stderr.strip()}")
    return voices
