"""A media URL as speech is: chunks of s16le mono PCM at one rate, decoded as it downloads.

aiohttp fetches it; :func:`~edgespeak.audio.sniff.sniff` tells the format from the first
bytes; :mod:`edgespeak.audio.media` decodes; :class:`~edgespeak.audio.resample.Resampler`
(soxr) converts to the rate the speaker plays at, so the ALSA device stays open across speech
and media. Playback paces the download (a full sink queue stops the reads, TCP does the rest).

Every problem raises :class:`~edgespeak.base.errors.MediaError` with a reason that names the
host at most: never the URL's path or query, where Home Assistant puts access tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from edgespeak.audio.sniff import MediaInfo, sniff
from edgespeak.base.errors import AudioFormatError, MediaError
from edgespeak.base.pcm import FRAME_BYTES

if TYPE_CHECKING:  # imported with the first media URL (numpy, soxr: ~15 MiB), in a thread
    from edgespeak.audio.media import MediaDecoder
    from edgespeak.audio.resample import Resampler

log = logging.getLogger(__name__)
SCHEMES = ("http", "https")


@dataclass(frozen=True)
class UrlLimits:
    """``max_seconds``: seconds of audio played at most; ``max_bytes``: bytes downloaded at
    most; ``timeout_s``: seconds allowed to connect, and between two reads."""

    max_seconds: float
    max_bytes: int
    timeout_s: float


def url_host(url: str) -> str:
    """The host of ``url`` with its port when one is written, without user info, path or
    query; ``"?"`` when there is none."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "?"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host


def check_url(url: str) -> None:
    """Raise MediaError unless ``url`` is an http or https URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise MediaError("not a URL") from None
    if parts.scheme.lower() not in SCHEMES:
        scheme = parts.scheme[:20] or "none"
        raise MediaError(f"unsupported URL scheme {scheme!r}: only http and https are played")
    if not parts.hostname:
        raise MediaError("the URL has no host")


class UrlAudio:
    """The media at ``url`` as s16le mono PCM at ``rate_hz`` Hz; iterate :meth:`pcm` once."""

    def __init__(self, url: str, rate_hz: int, limits: UrlLimits) -> None:
        self._url = url
        self.host = url_host(url)
        self.rate_hz = rate_hz
        self._limits = limits

    async def pcm(self) -> AsyncGenerator[bytes, None]:
        """Yield the audio as it downloads and decodes.

        Raises MediaError: a scheme other than http(s), a refused or failed connection, an
        HTTP status >= 400, no answer within ``timeout_s``, a body that is not audio, a
        download or stream cut short, more than ``max_bytes`` bytes or ``max_seconds``
        seconds.
        """
        check_url(self._url)
        t = self._limits.timeout_s
        timeout = aiohttp.ClientTimeout(total=None, connect=t, sock_connect=t, sock_read=t)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self._url) as response,
            ):
                self._check_response(response)
                async for pcm in self._decode(response):
                    yield pcm
        except aiohttp.ClientConnectorError as exc:
            err = exc.os_error  # its strerror may quote the address; the errno's text does not
            code = err.errno or 0
            why = os.strerror(code) if code > 0 else err.strerror or "failed"
            raise MediaError(f"cannot connect to {self.host}: {why.lower()}") from None
        except TimeoutError:  # aiohttp's connect and read timeouts are TimeoutErrors too
            raise MediaError(f"no answer from {self.host} within {t:g} s") from None
        except aiohttp.ClientPayloadError:
            raise MediaError(f"the download from {self.host} was cut short") from None
        except aiohttp.TooManyRedirects:
            raise MediaError(f"too many redirects from {self.host}") from None
        except aiohttp.ClientError as exc:
            raise MediaError(f"download from {self.host} failed: {type(exc).__name__}") from None

    def _check_response(self, response: aiohttp.ClientResponse) -> None:
        if response.status >= 400:
            raise MediaError(f"HTTP {response.status} {response.reason or ''} from {self.host}")
        length = response.content_length
        if length is not None and length > self._limits.max_bytes:
            raise MediaError(f"too large: {length} bytes, more than {self._limits.max_bytes}")

    async def _decode(self, response: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
        limits = self._limits
        max_frames = int(limits.max_seconds * self.rate_hz)
        head = b""
        decoder: MediaDecoder | None = None
        resampler: Resampler | None = None
        fetched = frames = 0
        try:
            async for chunk in response.content.iter_any():
                fetched += len(chunk)
                if fetched > limits.max_bytes:
                    raise MediaError(f"too large: more than {limits.max_bytes} bytes")
                if decoder is None:
                    head += chunk
                    info = self._sniff(head, response.content_type)
                    if info is None:
                        continue
                    decoder, resampler = await asyncio.to_thread(_open, info, self.rate_hz)
                    chunk, head = head, b""
                assert decoder is not None and resampler is not None
                pcm = resampler.process(await self._feed(decoder, chunk))
                frames += len(pcm) // FRAME_BYTES
                if frames > max_frames:
                    raise MediaError(f"too long: more than {limits.max_seconds:g} s of audio")
                if pcm:
                    yield pcm
            if decoder is None or resampler is None:
                raise MediaError(f"not audio: {self.host} sent {fetched} bytes and no audio header")
            try:
                tail = await asyncio.to_thread(decoder.finish)
            except AudioFormatError as exc:
                raise MediaError(str(exc)) from None
            pcm = resampler.process(tail) + resampler.flush()
            if frames + len(pcm) // FRAME_BYTES > max_frames:
                raise MediaError(f"too long: more than {limits.max_seconds:g} s of audio")
            if pcm:
                yield pcm
        except AudioFormatError as exc:
            raise MediaError(str(exc)) from None
        finally:
            if decoder is not None:
                decoder.close()

    def _sniff(self, head: bytes, content_type: str) -> MediaInfo | None:
        """What ``head`` is, once it tells; None while it does not yet."""
        try:
            info = sniff(head)
        except AudioFormatError as exc:
            raise MediaError(f"{exc} (Content-Type {content_type})") from None
        if info is None:
            return None
        log.info(
            "playing %s from %s: %d Hz, %d channels → %d Hz mono",
            info.format,
            self.host,
            info.rate_hz,
            info.channels,
            self.rate_hz,
        )
        return info

    @staticmethod
    async def _feed(decoder: MediaDecoder, chunk: bytes) -> bytes:
        """Decode ``chunk`` in a thread (miniaudio blocks while it decodes)."""
        task = asyncio.ensure_future(asyncio.to_thread(decoder.feed, chunk))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            decoder.close()  # the thread returns at once: its input is cut
            with contextlib.suppress(Exception):
                await task
            raise


def _open(info: MediaInfo, rate_hz: int) -> tuple[MediaDecoder, Resampler]:
    """The decoder for ``info`` and a resampler from its rate to ``rate_hz`` Hz; the modules
    (numpy, soxr, maybe miniaudio) are imported here, on the first media URL: call it in a
    thread. Raises AudioFormatError."""
    from edgespeak.audio.media import open_decoder
    from edgespeak.audio.resample import Resampler

    return open_decoder(info), Resampler(info.rate_hz, rate_hz)
