"""``edgespeak voices list | get ID``: the configured provider's voices.

Asks the Fish ``/model`` HTTP API at the base of ``[tts] url`` (the local server when it is
unset), with the same key as the live connection. Prints a table (id, title, languages, tags),
or the provider's JSON with ``--json``. Exit codes: 0 fine, 1 no such voice, 2 the provider
could not be asked (unreachable, key refused, not a Fish-compatible answer).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edgespeak.base.errors import TtsError
from edgespeak.config import Settings

TITLE_WIDTH = 40


def add_voices_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """The ``voices`` command and its ``list`` and ``get`` subcommands, on ``sub``."""
    voices = sub.add_parser("voices", help="the provider's voices (for `voice`/reference_id)")
    voices_sub = voices.add_subparsers(dest="voices_command", required=True)
    lst = voices_sub.add_parser("list", help="voices, filtered and paged", parents=[common])
    lst.add_argument("--language", action="append", help="e.g. en (repeatable: any of them)")
    lst.add_argument("--tag", action="append", help="repeatable: voices with every tag")
    lst.add_argument("--title", help="title contains this")
    lst.add_argument("--mine", action="store_true", help="only your own voices (cloud)")
    lst.add_argument("--page-size", type=_positive, default=20, help="voices per page (20)")
    lst.add_argument("--page", type=_positive, default=1, help="page number, from 1")
    lst.add_argument("--json", action="store_true", help="print the provider's JSON")
    get = voices_sub.add_parser("get", help="one voice by id", parents=[common])
    get.add_argument("id", help="voice id (reference_id)")
    get.add_argument("--json", action="store_true", help="print the provider's JSON")


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


async def voices(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``voices list`` or ``voices get`` for ``args``; returns the exit code."""
    from edgespeak.providers.voices import UnknownVoice, VoicesClient, http_base

    base = http_base(settings.tts_url)
    try:
        async with VoicesClient(
            base, token=settings.tts_token, connect_timeout_s=settings.tts.connect_timeout_s
        ) as client:
            if args.voices_command == "get":
                voice = await client.get(args.id)
                if args.json:
                    _print_json(voice.model_dump(by_alias=True, mode="json"))
                else:
                    _print_voice(voice.model_dump(by_alias=True, mode="json"))
                return 0
            page = await client.list(
                language=args.language, tags=args.tag, title=args.title, mine=args.mine,
                page_size=args.page_size, page_number=args.page,
            )  # fmt: skip
    except UnknownVoice as exc:
        print(f"edgespeak voices: {exc}", file=sys.stderr)
        return 1
    except TtsError as exc:
        print(f"edgespeak voices: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(page.model_dump(by_alias=True, mode="json"))
        return 0
    rows: list[tuple[str, ...]] = [
        (v.id, _cut(v.title, TITLE_WIDTH), ",".join(v.languages), ",".join(v.tags))
        for v in page.items
    ]
    _print_table(("id", "title", "languages", "tags"), rows)
    first = (args.page - 1) * args.page_size
    shown = f"{first + 1}-{first + len(rows)}" if rows else "none"
    print(f"{shown} of {page.total} voices at {base}")
    return 0


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_voice(voice: dict[str, Any]) -> None:
    author = voice.get("author")
    fields = {
        "id": voice["_id"],
        "title": voice.get("title"),
        "description": voice.get("description"),
        "languages": ", ".join(voice.get("languages") or []),
        "tags": ", ".join(voice.get("tags") or []),
        "state": voice.get("state"),
        "visibility": voice.get("visibility"),
        "author": author.get("nickname") if isinstance(author, dict) else None,
    }
    for key, value in fields.items():
        if value not in (None, ""):
            print(f"{key + ':':13}{value}")


def _print_json(body: dict[str, Any]) -> None:
    print(json.dumps(body, indent=2, ensure_ascii=False))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
