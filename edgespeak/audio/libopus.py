"""libopus's decoder through ctypes: the four calls :class:`~edgespeak.audio.opus.OggOpusDecoder`
needs, and nothing more.

opuslib_next, the binding the encoder uses, brings 13 modules (~0.5 MiB of the daemon's RSS)
for every call libopus has; the daemon only decodes. The library is found as opuslib_next
finds it (``ctypes.util.find_library("opus")``, then the Debian path), loaded once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import weakref

from edgespeak.base.errors import AudioFormatError

_MAX_FRAME = 5760  # 120 ms at 48 kHz, the longest Opus packet (RFC 6716 §3.2.5)


@functools.cache
def _library() -> ctypes.CDLL:
    """libopus with the decoder calls' signatures. Raises AudioFormatError when missing."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("opus") or "libopus.so.0")
    except OSError as exc:
        raise AudioFormatError(f"libopus cannot be loaded (apt install libopus0): {exc}") from None
    lib.opus_decoder_create.argtypes = (ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int))
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decode.argtypes = (
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
        ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int,
    )  # fmt: skip
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decoder_destroy.argtypes = (ctypes.c_void_p,)
    lib.opus_decoder_destroy.restype = None
    lib.opus_strerror.argtypes = (ctypes.c_int,)
    lib.opus_strerror.restype = ctypes.c_char_p
    return lib


def strerror(code: int) -> str:
    """libopus's message for error ``code`` (a negative return value)."""
    message: bytes | None = _library().opus_strerror(code)
    return (message or b"unknown error").decode("utf-8", errors="replace")


class Decoder:
    """One libopus decoder: Opus packets in, bytes of s16le PCM at ``rate_hz`` Hz out
    (``channels`` interleaved), decoded into one buffer kept for the decoder's life.

    Raises AudioFormatError when libopus is missing or refuses the rate or channel count.
    """

    def __init__(self, rate_hz: int, channels: int) -> None:
        lib = _library()
        error = ctypes.c_int(0)
        state = lib.opus_decoder_create(rate_hz, channels, ctypes.byref(error))
        if not state or error.value:
            raise AudioFormatError(f"libopus decoder: {strerror(error.value)}")
        self._state = state
        self._channels = channels
        self._pcm = (ctypes.c_int16 * (_MAX_FRAME * channels))()
        weakref.finalize(self, lib.opus_decoder_destroy, state)

    def decode(self, packet: bytes) -> bytes:
        """The PCM of one Opus packet (up to 120 ms). Raises AudioFormatError, with libopus's
        reason, for a packet it cannot decode."""
        lib = _library()
        samples = lib.opus_decode(self._state, packet, len(packet), self._pcm, _MAX_FRAME, 0)
        if samples < 0:
            raise AudioFormatError(f"corrupt Opus packet: {strerror(samples)}")
        return ctypes.string_at(self._pcm, samples * self._channels * 2)
