"""Calls into libasound on the ``snd_pcm_t *`` of a pyalsaaudio PCM, for what pyalsaaudio 0.11
does not expose (``snd_pcm_delay``) or calls holding the GIL (``snd_pcm_drop``,
``snd_pcm_prepare``).

``snd_pcm_delay``: the frames a frame written now waits before it is heard. pyalsaaudio has
``avail()`` and ``htimestamp()``, both read from the ring buffer pointer only, and the pointer
is not the delay on every device. The PulseAudio plugin moves it when the server takes frames
into its own buffer (a buffer of them right at the start), so ``buffer - avail`` misses up to a
buffer of what is still to be heard; its ``snd_pcm_delay`` asks the server for the stream's
latency (``pa_stream_get_latency``), interpolated between updates: measured here within a
frame of what was written less what had played. On a hardware PCM it is the pointer plus the
driver's own FIFO/codec delay.

``snd_pcm_drop`` then ``snd_pcm_prepare`` (:func:`pcm_drop`, :func:`pcm_prepare`):
pyalsaaudio's ``drop()`` keeps the GIL, and its ``write()`` prepares a dropped or drained PCM
keeping the GIL too. On the PulseAudio
plugin the two are round trips to the server (cork and flush; then the stream is recreated:
``pulse_prepare`` in alsa-plugins' ``pcm_pulse.c``), a millisecond or more during which no
other thread of the daemon could run. A ctypes call releases the GIL.

The ``snd_pcm_t *`` comes from pyalsaaudio's PCM object (``alsapcm_t`` in pyalsaaudio 0.11's
alsaaudio.c, mirrored by :class:`_PcmObject`). The mirror is trusted only when the object has
exactly that size and its fields hold what the PCM was opened with (playback, mono, s16le, the
rate); else :func:`pcm_handle` returns None and the caller uses pyalsaaudio's own calls (and
the pointer for the delay). libasound is the library pyalsaaudio is linked to (one copy per
process: same soname).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools

import alsaaudio

from edgespeak.base.pcm import FRAME_BYTES

SND_PCM_STATE_SETUP = 1  # enum snd_pcm_state_t in alsa/pcm.h: stopped, parameters set


class _PcmObject(ctypes.Structure):
    """``alsapcm_t`` of pyalsaaudio 0.11 (PyObject_HEAD, then its fields, C alignment)."""

    _fields_ = [
        ("ob_refcnt", ctypes.c_ssize_t),
        ("ob_type", ctypes.c_void_p),
        ("pcmtype", ctypes.c_long),
        ("pcmmode", ctypes.c_int),
        ("cardname", ctypes.c_void_p),
        ("handle", ctypes.c_void_p),
        ("channels", ctypes.c_uint),
        ("rate", ctypes.c_uint),
        ("format", ctypes.c_int),
        ("periods", ctypes.c_uint),
        ("periodsize", ctypes.c_ulong),
        ("framesize", ctypes.c_int),
    ]


@functools.cache
def _libasound() -> ctypes.CDLL | None:
    """libasound with the calls used here declared, or None when it cannot be loaded."""
    for name in ("libasound.so.2", ctypes.util.find_library("asound")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.snd_pcm_delay.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_long)]
        lib.snd_pcm_delay.restype = ctypes.c_int
        for call in (lib.snd_pcm_drop, lib.snd_pcm_prepare, lib.snd_pcm_state):
            call.argtypes = [ctypes.c_void_p]
            call.restype = ctypes.c_int
        return lib
    return None


def pcm_handle(pcm: alsaaudio.PCM, rate_hz: int) -> int | None:
    """The ``snd_pcm_t *`` of ``pcm`` (open for s16le mono playback at ``rate_hz`` Hz) as an
    address, or None when its layout is not the one known here or libasound is missing."""
    if _libasound() is None or type(pcm).__basicsize__ != ctypes.sizeof(_PcmObject):
        return None
    fields = _PcmObject.from_address(id(pcm))  # CPython: id() is the object's address
    known = (
        fields.pcmtype == alsaaudio.PCM_PLAYBACK
        and fields.channels == 1
        and fields.rate == rate_hz
        and fields.format == alsaaudio.PCM_FORMAT_S16_LE
        and fields.framesize == FRAME_BYTES
    )
    return fields.handle if known and fields.handle else None


def pcm_delay(handle: int) -> int:
    """``snd_pcm_delay`` of the open PCM at ``handle`` (from :func:`pcm_handle`, while the PCM
    object it came from is open): frames a frame written now waits before it is heard. 0 when
    nothing is queued: underran (``-EPIPE``) or stopped after a drop (``-EBADFD``). Does not
    block for long (PulseAudio: until its first timing update). Raises
    alsaaudio.ALSAAudioError for any other error (device gone, server gone)."""
    lib = _libasound()
    assert lib is not None, "pcm_handle() returns None without libasound"
    frames = ctypes.c_long()
    rc = int(lib.snd_pcm_delay(ctypes.c_void_p(handle), ctypes.byref(frames)))
    if rc in (-errno.EPIPE, -errno.EBADFD):
        return 0
    if rc < 0:
        raise alsaaudio.ALSAAudioError(f"snd_pcm_delay failed: {errno.errorcode.get(-rc, rc)}")
    return max(0, frames.value)


def pcm_drop(handle: int) -> None:
    """Stop the open PCM at ``handle`` at once, discarding what is queued (``snd_pcm_drop``),
    and prepare it again (``snd_pcm_prepare``): the next write starts it. Both without the
    GIL. Raises alsaaudio.ALSAAudioError when either fails."""
    lib = _libasound()
    assert lib is not None, "pcm_handle() returns None without libasound"
    for name, call in (("drop", lib.snd_pcm_drop), ("prepare", lib.snd_pcm_prepare)):
        rc = int(call(ctypes.c_void_p(handle)))
        if rc < 0:
            raise alsaaudio.ALSAAudioError(f"snd_pcm_{name} failed: {errno.errorcode.get(-rc, rc)}")


def pcm_prepare(handle: int) -> bool:
    """Prepare the open PCM at ``handle`` when it is stopped (``SND_PCM_STATE_SETUP``: drained
    or never started since its parameters were set), without the GIL, so that the next write
    starts it at once (pyalsaaudio's ``write()`` would prepare it first, keeping the GIL).
    Returns whether it was prepared now. Raises alsaaudio.ALSAAudioError when that fails."""
    lib = _libasound()
    assert lib is not None, "pcm_handle() returns None without libasound"
    if int(lib.snd_pcm_state(ctypes.c_void_p(handle))) != SND_PCM_STATE_SETUP:
        return False
    rc = int(lib.snd_pcm_prepare(ctypes.c_void_p(handle)))
    if rc < 0:
        raise alsaaudio.ALSAAudioError(f"snd_pcm_prepare failed: {errno.errorcode.get(-rc, rc)}")
    return True
