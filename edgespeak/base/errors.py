"""The error tree: every exception edgespeak raises on purpose is an :class:`EdgespeakError`.

::

    EdgespeakError
    ├── ConfigError          configuration file or environment invalid
    ├── PayloadError         an MQTT or Hermes payload is refused (a ``failed`` event)
    ├── RequestError         one of edgespeak's servers refuses what a client sent
    │   ├── SessionError         server/app.py: Fish live ``finish`` reason ``error``
    │   ├── InputError           server/cartesia.py: Cartesia ``error`` frame
    │   ├── UnsupportedRequest   server/output.py: a format, rate or bitrate it cannot make
    │   └── ProtocolError        inlets/esphome/messages.py: ESPHome API framing, handshake
    ├── TtsError             a TTS provider or engine did not deliver audio
    │   ├── TtsUnavailable, TtsRejected, TtsProtocolError
    │   ├── UnknownVoice         providers/voices.py: no voice with that id
    │   ├── EngineError          sources/espeak.py: espeak-ng failed
    │   └── RelayGap             group/inbox.py: the group's leader stopped relaying
    ├── AudioFormatError     audio bytes cannot be parsed or decoded
    │   └── RelayError           group/relay.py: a relay message cannot be used
    ├── AudioDeviceError     the ALSA output cannot be opened or written
    ├── CacheError           the phrase cache cannot be read or written
    │   └── IndexUnavailable     sources/cache/index.py: index closed, unusable or corrupt
    └── ChimeError           speaking/chimes.py: unknown, unreadable or malformed chime

The classes defined elsewhere live beside the modules that raise them. Private signals (a
leading underscore: ``_CloseSocket``, ``_Stale``…) stay outside the tree: they are control
flow between two functions of one module, never reported, and must not be caught by an
``except EdgespeakError`` on the way.

Chaining, when a boundary turns a foreign exception into one of these:

- ``raise New(...) from exc`` by default, so a traceback (``log.exception``, a crashed task,
  ``exc_info``) keeps the cause: the library's frames, the errno, the exception type. A bare
  ``raise`` (or ``raise exc``) for an exception passed on unchanged; never ``raise exc from
  None``, which erases the cause it already had.
- ``from None`` only when the new message says everything a reader needs (the cause's own
  words where they help) and either
  - the cause could carry a secret: an aiohttp handshake or client error holds the request
    URL (a token in its query) and headers (an API key), a pydantic ValidationError of the
    settings holds their values (keys, passwords), a UnicodeDecodeError of a secret file
    holds its bytes; or
  - the error refuses bytes from outside (an MQTT payload, an HTTP body, a WebSocket frame)
    and is answered or reported without a traceback (a ``failed`` event, an HTTP 4xx, a
    ``finish``/``error`` frame): the chain would only repeat the message, holding the input.

Messages never carry secrets either (API keys, passwords): callers pass only what is safe to
log.
"""


class EdgespeakError(Exception):
    """Base of every error edgespeak raises on purpose."""


class ConfigError(EdgespeakError):
    """The configuration file or environment is invalid; the message names the key."""


class PayloadError(EdgespeakError):
    """An MQTT announce payload could not be turned into an announcement.

    ``announcement_id`` is the payload's own ``id`` when it could be read, else None.
    """

    def __init__(self, message: str, announcement_id: str | None = None) -> None:
        super().__init__(message)
        self.announcement_id = announcement_id


class RequestError(EdgespeakError):
    """One of edgespeak's servers refuses what a client sent: the local TTS server
    (``edgespeak serve``: malformed, unsupported, over a limit, or busy; the message goes
    back in a ``finish`` or ``error`` frame or an HTTP error, so it names what is wrong), or
    the ESPHome native API (a broken frame or handshake: the connection ends)."""


class TtsError(EdgespeakError):
    """A TTS provider (or the espeak-ng engine) did not deliver audio."""


class TtsUnavailable(TtsError):
    """The provider could not be reached (refused, DNS, timeout, 5xx, dropped mid-stream)."""


class TtsRejected(TtsError):
    """The provider refused the request or the handshake (401 key, 402 credit, 429 rate limit).

    ``status`` holds the HTTP status of a refused WebSocket upgrade, or None.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TtsProtocolError(TtsError):
    """The provider broke the protocol, or ended a session with ``finish`` reason ``error``."""


class AudioFormatError(EdgespeakError):
    """Audio bytes could not be parsed or decoded (bad Ogg page, bad Opus packet, bad WAV)."""


class MediaError(EdgespeakError):
    """A media URL could not be played: refused, an HTTP error, no answer in time, not audio,
    cut short, or over a limit. The message names the host at most, never the URL's path or
    query (Home Assistant puts access tokens there)."""


class AudioDeviceError(EdgespeakError):
    """The ALSA output could not be opened or written."""


class CacheError(EdgespeakError):
    """The phrase cache could not be read or written."""
