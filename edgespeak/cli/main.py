"""The ``edgespeak`` command: ``run``, ``serve``, ``say``, ``cache``, ``voices``, ``ha``,
``doctor``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from edgespeak import __version__
from edgespeak.base.errors import ConfigError
from edgespeak.base.logs import setup_logging
from edgespeak.cli.voices import add_voices_parser
from edgespeak.config import Settings, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgespeak", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgespeak {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config (default /etc/edgespeak/…)")
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    add("run", "run the daemon: MQTT announcements → TTS → ALSA")
    add("serve", "run the local TTS server (Fish live and Cartesia protocols; Piper, espeak-ng)")
    say = add("say", "publish an announcement to this node and wait until it was spoken")
    say.add_argument("text")
    say.add_argument("--voice", help="voice (Fish reference_id / espeak-ng voice)")
    say.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    cache = sub.add_parser("cache", help="look after the phrase cache: list|warm|verify|purge")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    cache_sub.add_parser(
        "list", help="entries, most recently used first, and the totals", parents=[common]
    )
    warm = cache_sub.add_parser(
        "warm", help="synthesise [cache] phrases (pinned) and TEXTs", parents=[common]
    )
    warm.add_argument("texts", nargs="*", metavar="TEXT", help="more phrases to cache")
    cache_sub.add_parser("verify", help="check every entry; drop damaged ones", parents=[common])
    purge = cache_sub.add_parser("purge", help="remove entries", parents=[common])
    purge.add_argument("--unpinned", action="store_true", help="keep the pinned phrases")
    ha = sub.add_parser("ha", help="Home Assistant: remove this node's discovery")
    ha_sub = ha.add_subparsers(dest="ha_command", required=True)
    ha_sub.add_parser(
        "remove", help="clear the node's discovery, state and availability", parents=[common]
    )
    add("doctor", "check config, audio device, broker, TTS provider and cache; print fixes")
    add_voices_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "doctor":  # reports a broken config itself, as one of its checks
        from edgespeak.cli.doctor import doctor

        setup_logging(args.log_level or "CRITICAL")  # the table says what matters
        return doctor(args.config)
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        print(f"edgespeak: {exc}", file=sys.stderr)
        return 2
    level = args.log_level or settings.log_level
    setup_logging(level)
    if args.command == "cache" and args.cache_command != "warm":
        from edgespeak.cli import cache as cache_cli

        if args.cache_command == "list":
            return cache_cli.list_entries(settings)
        if args.cache_command == "verify":
            return cache_cli.verify(settings)
        return cache_cli.purge(settings, unpinned_only=args.unpinned)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_dispatch(args, settings))
    return 130


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "run":
            from edgespeak.daemon import run

            return await run(settings)
        case "serve":
            from edgespeak.server.app import serve
            from edgespeak.sources.espeak import EngineError

            try:
                await serve(settings.server)
            except EngineError as exc:  # the default voice cannot speak: say why, at start
                print(f"edgespeak serve: {exc}", file=sys.stderr)
                return 2
            return 0
        case "say":
            from edgespeak.cli.say import say

            return await say(settings, args.text, voice=args.voice, timeout_s=args.timeout)
        case "cache":
            from edgespeak.cli.cache import warm

            return await warm(settings, args.texts)
        case "ha":
            from edgespeak.cli.ha import remove

            return await remove(settings)
        case "voices":
            from edgespeak.cli.voices import voices

            return await voices(settings, args)
    raise AssertionError(args.command)
