"""The daemon's Piper worker process (real Piper in a real child process): requests take
turns, one left early is cancelled without disturbing the next, a dead worker fails its
requests with a clear error (and the fallback starts it again), and a broken voice is reported
at start."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from edgespeak.sources.espeak import EngineError, EspeakEngine
from edgespeak.sources.fallback import Fallback
from edgespeak.sources.piper_process import START_TIMEOUT_S, PiperProcess
from edgespeak.sources.voices import VoiceError, describe, find_piper_voices
from tests.asr import heard
from tests.test_piper_server import JOE, copy_voice

THREE = "The first one is short. The second is here. The third ends it."


@pytest.fixture
async def worker() -> PiperProcess:
    process = PiperProcess(find_piper_voices().get(JOE))
    await process.start()
    yield process  # type: ignore[misc]
    await process.close()


async def test_ready_with_its_rate_and_real_time_factor(worker: PiperProcess) -> None:
    assert worker.ready and worker.rate_hz == 22050
    assert worker.rtf is not None and 0 < worker.rtf < 5
    assert worker.load_s is not None and worker.load_s > 0


async def test_a_request_left_early_does_not_disturb_the_next(worker: PiperProcess) -> None:
    speech = worker.synthesize(THREE)
    first = await anext(speech)  # one sentence, then the listener goes away (interrupted)
    await speech.aclose()
    assert len(first) > 0
    pcm = b"".join([chunk async for chunk in worker.synthesize("Dinner is ready.")])
    heard(pcm, 22050, "Dinner is ready.")  # not the rest of the cancelled request


async def test_requests_take_turns(worker: PiperProcess) -> None:
    async def say(text: str) -> list[bytes]:
        return [chunk async for chunk in worker.synthesize(text)]

    three, one = await asyncio.gather(say(THREE), say("And this is the end."))
    assert len(three) == 3 and len(one) == 1
    heard(one[0], 22050, "And this is the end.")


async def test_a_dead_worker_fails_its_request_clearly(worker: PiperProcess) -> None:
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(EngineError, match="exited"):
        _ = [chunk async for chunk in worker.synthesize("Hello there.")]
    assert not worker.ready
    with pytest.raises(EngineError, match="not running"):
        _ = [chunk async for chunk in worker.synthesize("Hello there.")]


async def test_a_corrupt_model_is_reported_at_start(tmp_path: Path) -> None:
    model, config = copy_voice(tmp_path, "en_US-bad-medium")
    model.write_bytes(model.read_bytes()[:500_000])
    process = PiperProcess(describe(model, config, "test"))
    with pytest.raises(VoiceError, match="cannot load"):
        await process.start()
    assert not process.ready


async def test_a_dead_fallback_worker_is_started_again_espeak_ng_meanwhile() -> None:
    """Bad before: a Piper worker that died (killed for memory on a Pi, say) stayed dead until
    the daemon restarted, and every fallback announcement fell to espeak-ng. A second death
    within RESTART_EVERY_S is not restarted at once (no restart loop)."""
    piper = PiperProcess(find_piper_voices().get(JOE))
    fallback = Fallback(EspeakEngine(voice="en"), "en", piper, live_max_rtf=5.0)
    await fallback.start()
    try:
        assert fallback.live().engine == "piper"
        first_pid = piper.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(EngineError, match="exited"):
            _ = [chunk async for chunk in piper.synthesize("Hello there.")]
        meanwhile = fallback.live()
        assert meanwhile.engine == "espeak-ng" and fallback.revival is not None
        await asyncio.wait_for(fallback.revival, START_TIMEOUT_S)
        again, second_pid = fallback.live(), piper.pid
        assert again.engine == "piper" and second_pid is not None and second_pid != first_pid
        heard(b"".join([c async for c in again.synthesize("Dinner is ready.")]), 22050,
              "Dinner is ready.")  # fmt: skip
        revival = fallback.revival
        os.kill(second_pid, signal.SIGKILL)
        with pytest.raises(EngineError, match="exited"):
            _ = [chunk async for chunk in piper.synthesize("Hello there.")]
        assert fallback.live().engine == "espeak-ng" and fallback.revival is revival
    finally:
        await fallback.close()
