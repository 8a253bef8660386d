"""FLAC, MP3 and Ogg Vorbis → s16le mono PCM with ``miniaudio``, fed as the bytes arrive.

miniaudio's decoders pull their input through a ``read`` callback. :class:`PulledDecoder`
turns that round: a worker thread runs the decoder; :meth:`PulledDecoder.feed` hands it bytes
and returns once the decoder has asked for more than there is (so everything those bytes
complete has been decoded) or has ended. Nothing is guessed from timing. miniaudio downmixes
to mono at the stream's own rate (no resampling: that is soxr's job downstream).
"""

from __future__ import annotations

import threading
from typing import Any

import miniaudio

from edgespeak.audio.sniff import MediaInfo
from edgespeak.base.errors import AudioFormatError
from edgespeak.base.pcm import FRAME_BYTES

_FORMATS = {
    "flac": miniaudio.FileFormat.FLAC,
    "mp3": miniaudio.FileFormat.MP3,
    "vorbis": miniaudio.FileFormat.VORBIS,
}
_FRAMES_PER_READ = 4096


class _Inbox(miniaudio.StreamableSource):  # type: ignore[misc]
    """The bytes fed so far, read by the decoder thread; ``hungry`` once it waits for more.
    Reads are whole, as from a file: a short read would end dr_mp3's stream early."""

    def __init__(self, lock: threading.Condition) -> None:
        self.lock = lock
        self.data = bytearray()
        self.ended = False  # no more input will come
        self.hungry = False  # the decoder waits for input that is not there

    def read(self, num_bytes: int) -> bytes:
        with self.lock:
            while len(self.data) < num_bytes and not self.ended:  # a short read ends some decoders
                self.hungry = True
                self.lock.notify_all()
                self.lock.wait()
            self.hungry = False
            out = bytes(self.data[:num_bytes])
            del self.data[:num_bytes]
            return out


class PulledDecoder:
    """A :class:`~edgespeak.audio.media.MediaDecoder` for ``info.format`` (flac, mp3 or
    vorbis) running miniaudio in a worker thread.

    A FLAC stream whose STREAMINFO states its length and that ends before it is truncated.
    """

    def __init__(self, info: MediaInfo) -> None:
        if info.format not in _FORMATS:
            raise AudioFormatError(f"miniaudio does not decode {info.format}")
        self._info = info
        self._lock = threading.Condition()
        self._inbox = _Inbox(self._lock)
        self._out = bytearray()
        self._frames = 0
        self._error: str | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name="media-decoder", daemon=True)
        self._thread.start()

    @property
    def rate_hz(self) -> int:
        return self._info.rate_hz

    def feed(self, data: bytes) -> bytes:
        with self._lock:
            self._inbox.data += data
            self._inbox.hungry = False
            self._lock.notify_all()
            while not self._done and not self._inbox.hungry:
                self._lock.wait()
            return self._take()

    def finish(self) -> bytes:
        with self._lock:
            self._inbox.ended = True
            self._lock.notify_all()
            while not self._done:
                self._lock.wait()
            rest = self._take()
        self._thread.join()
        total = self._info.total_frames
        if self._frames == 0:
            raise AudioFormatError(f"the {self._info.format} stream holds no audio")
        if self._info.format == "flac" and total is not None and self._frames < total:
            raise AudioFormatError(f"truncated FLAC: {self._frames} of its {total} frames came")
        return rest

    def close(self) -> None:
        with self._lock:
            self._inbox.ended = True
            self._inbox.data.clear()
            self._lock.notify_all()

    def _take(self) -> bytes:
        """The PCM decoded so far (caller holds the lock); raises the decoder's error."""
        if self._error is not None:
            raise AudioFormatError(self._error)
        out = bytes(self._out)
        self._out.clear()
        return out

    def _run(self) -> None:
        try:
            stream: Any = miniaudio.stream_any(
                self._inbox,
                _FORMATS[self._info.format],
                miniaudio.SampleFormat.SIGNED16,
                nchannels=1,
                sample_rate=self._info.rate_hz,
                frames_to_read=_FRAMES_PER_READ,
            )
            for chunk in stream:
                pcm = chunk.tobytes()
                with self._lock:
                    self._out += pcm
                    self._frames += len(pcm) // FRAME_BYTES
        except miniaudio.MiniaudioError as exc:
            with self._lock:
                self._error = f"cannot decode the {self._info.format} stream: {exc}"
        finally:
            with self._lock:
                self._done = True
                self._lock.notify_all()
