"""The error tree. Each boundary converts foreign exceptions with ``raise … from exc``.

Messages never carry secrets (API keys, passwords): callers pass only what is safe to log.
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


class TtsError(EdgespeakError):
    """A TTS provider did not deliver audio."""


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
