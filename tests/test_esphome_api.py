"""The ESPHome native API of the real daemon, driven by aioesphomeapi's APIClient (what Home
Assistant uses): plaintext and Noise, wrong keys, device info, the media player entity, its
states, several clients at once, a silent client dropped, time requests, mDNS."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aioesphomeapi import (
    EncryptionPlaintextAPIError,
    InvalidEncryptionKeyAPIError,
    MediaPlayerEntityFeature,
    MediaPlayerFormatPurpose,
    MediaPlayerState,
    RequiresEncryptionAPIError,
)
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edgespeak.inlets.esphome.device import node_mac
from edgespeak.inlets.esphome.discovery import SERVICE
from edgespeak.inlets.esphome.framing import read_varuint, varuint
from edgespeak.inlets.esphome.messages import decode, encode, pb
from tests.conftest import Stack
from tests.esphome_peer import RATE, esphome_node, new_key, peer

ZERO_KEY = "MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA="  # Home Assistant's probing key


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "noise"])
async def test_device_info_entity_and_state(stack: Stack, encrypted: bool) -> None:
    key = new_key() if encrypted else None
    options = {"encryption_key": key} if key else {}
    async with esphome_node(stack, friendly_name="Kitchen speaker", **options) as node:
        client = node.client(key)
        await client.connect(login=True)
        try:
            version = client.api_version
            assert version is not None and (version.major, version.minor) == (1, 14)
            info, entities, services = await client.device_info_and_list_entities()
        finally:
            await client.disconnect()
        async with peer(node, key) as p:
            first = p.states[0]
    assert info.name == "testnode" and info.friendly_name == "Kitchen speaker"
    assert info.mac_address == node_mac("testnode")
    assert info.manufacturer == "edgespeak"
    assert info.project_name.split(".") == ["edgespeak", "speaker"]
    assert info.api_encryption_supported is encrypted
    (player,) = entities
    assert not services
    flags = MediaPlayerEntityFeature(player.feature_flags_compat(version))
    for feature in ("PLAY_MEDIA", "MEDIA_ANNOUNCE", "VOLUME_SET", "VOLUME_MUTE", "STOP"):
        assert MediaPlayerEntityFeature[feature] in flags
    assert MediaPlayerEntityFeature.PAUSE not in flags
    formats = [(f.format, f.sample_rate, f.num_channels, f.sample_bytes, f.purpose)
               for f in player.supported_formats]  # fmt: skip
    assert formats == [
        ("wav", RATE, 1, 2, MediaPlayerFormatPurpose.DEFAULT),
        ("wav", RATE, 1, 2, MediaPlayerFormatPurpose.ANNOUNCEMENT),
    ]
    assert first.key == player.key and first.state == MediaPlayerState.IDLE
    assert first.volume == pytest.approx(1.0) and first.muted is False


async def test_keys_are_checked_and_mismatched_transports_are_told(stack: Stack) -> None:
    key = new_key()
    async with esphome_node(stack, encryption_key=key) as node:
        for wrong in (new_key(), ZERO_KEY):  # a wrong key, and Home Assistant's probe
            with pytest.raises(InvalidEncryptionKeyAPIError) as refused:
                await node.client(wrong).connect(login=True)
            # The device's hello came before the key check: the name and MAC are known.
            assert refused.value.received_name == "testnode"
            assert refused.value.received_mac == node_mac("testnode").replace(":", "").lower()
        with pytest.raises(RequiresEncryptionAPIError):
            await node.client(None).connect(login=True)
        async with peer(node, key) as p:  # the right key still works after the refusals
            assert p.states[0].state == MediaPlayerState.IDLE
    assert key not in stack.daemon_log.read_text()
    async with esphome_node(stack) as node:
        with pytest.raises(EncryptionPlaintextAPIError):
            await node.client(new_key()).connect(login=True)


async def test_several_clients_each_get_the_state_changes(stack: Stack) -> None:
    async with esphome_node(stack) as node, peer(node) as first, peer(node) as second:
        first.client.media_player_command(first.info.key, volume=0.3)
        for p in (first, second):
            await p.wait_state(lambda s: s.volume == pytest.approx(0.3))


async def test_a_silent_client_is_pinged_then_dropped(stack: Stack) -> None:
    async with esphome_node(stack, client_timeout_s=1.0) as node, peer(node) as kept:
        mute_reader, mute_writer = await asyncio.open_connection("127.0.0.1", node.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(frame(pb.HelloRequest(client_info="silent", api_version_major=1)))
        assert type(await read_message(reader)).__name__ == "HelloResponse"
        assert type(await read_message(reader)).__name__ == "PingRequest"  # at half the timeout
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # then dropped: EOF
            assert await mute_reader.read() == b""  # one that never said a word: dropped too
        writer.close()
        mute_writer.close()
        # The client that answers pings (aioesphomeapi does) stays, across the same time.
        kept.client.media_player_command(kept.info.key, volume=0.5)
        await kept.wait_state(lambda s: s.volume == pytest.approx(0.5))
    log = stack.daemon_log.read_text()
    assert "dropped: silent for" in log and "dropped: no handshake within 1 s" in log


async def test_time_requests_are_answered_and_messages_before_hello_refused(
    stack: Stack,
) -> None:
    async with esphome_node(stack) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(frame(pb.HelloRequest(client_info="raw")) + frame(pb.GetTimeRequest()))
        assert type(await read_message(reader)).__name__ == "HelloResponse"
        answer = await read_message(reader)
        assert abs(answer.epoch_seconds - time.time()) < 5
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(frame(pb.DeviceInfoRequest()))
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed: no hello first
        writer.close()


async def test_mdns_announces_the_device_on_loopback(stack: Stack) -> None:
    key = new_key()
    async with esphome_node(stack, discovery=True, encryption_key=key) as node:
        zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            info = AsyncServiceInfo(SERVICE, f"testnode.{SERVICE}")
            assert await info.async_request(zeroconf.zeroconf, 5000)
        finally:
            await zeroconf.async_close()
    txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    assert info.port == node.port and info.parsed_addresses() == ["127.0.0.1"]
    assert info.server == "testnode.local."
    assert txt["mac"] == node_mac("testnode").replace(":", "").lower()
    assert txt["friendly_name"] == "testnode"
    assert txt["api_encryption"] == "Noise_NNpsk0_25519_ChaChaPoly_SHA256"
    assert {"version", "platform", "board", "network"} <= txt.keys()


def frame(message: Any) -> bytes:
    """One plaintext frame."""
    message_id, payload = encode(message)
    return b"\0" + varuint(len(payload)) + varuint(message_id) + payload


async def read_message(reader: asyncio.StreamReader) -> Any:
    async with asyncio.timeout(5):
        assert await reader.readexactly(1) == b"\0"
        length = await read_varuint(reader)
        message_id = await read_varuint(reader)
        return decode(message_id, await reader.readexactly(length))
