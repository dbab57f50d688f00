"""The UI's commands, each checked against its own schema before the engine applies it (issue 30).

A ``commands`` row can be written by anyone with the database file: a second process, a script, a hand edit. So a
row is untrusted input: its payload must be a JSON object of at most ``MAX_PAYLOAD`` characters, with no NaN or
infinity, and hold exactly what its kind needs, of the right types, inside the bounds of ``core.bounds`` (the same
table the sliders and ``.env`` read). A row that fails is marked ``failed`` with the reason, shown on the Risk page,
and never stops the rows after it or the tick.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.config import ConfigError, validate_param_changes
from core.engine.closing import close_symbol

MAX_PAYLOAD = 4096  # characters: the largest real command (a set_params of every parameter) is under 300
MAX_WHO = 64
KINDS = ("set_params", "release_protection", "approve", "reject", "close_position", "flatten_all")
# What a set_params change came from, as param_audit's ``source``: the sidebar's sliders, switches and profile box, a
# research run applied to live, a plain command (the API, another tool); the engine writes "protection",
# "profile_expiry", "release" and "flatten" itself.
COMMAND_SOURCES = ("command", "slider", "switch", "profile", "research", "env")  # env: the sidebar's "Use .env value"


class CommandRefused(ValueError):
    """The row is not a command the engine will apply; the message says why (shown to the trader)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class IntentCommand(_Strict):
    intent_id: str = Field(min_length=1, max_length=200)


class ReleaseCommand(_Strict):
    id: int = Field(ge=1)


class CloseCommand(_Strict):
    symbol: Any  # checked (and upper-cased) by the closing part's own rule, with its message

    @field_validator("symbol", mode="before")
    @classmethod
    def _ticker(cls, value: Any) -> str:
        return close_symbol(value)


class FlattenCommand(_Strict):
    pass


SCHEMAS: dict[str, type[_Strict]] = {"approve": IntentCommand, "reject": IntentCommand,
                                     "release_protection": ReleaseCommand, "close_position": CloseCommand,
                                     "flatten_all": FlattenCommand}


def _no_constant(name: str) -> Any:
    raise CommandRefused(f"{name} is not a number a command may carry")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CommandRefused(f"{text} is not a finite number")
    return value


def parse_payload(raw: Any) -> dict[str, Any]:
    """The payload text as a JSON object (CommandRefused otherwise)."""
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise CommandRefused(f"payload is {type(raw).__name__}, not JSON text")
    if len(raw) > MAX_PAYLOAD:
        raise CommandRefused(f"payload of {len(raw):,} characters (at most {MAX_PAYLOAD:,})")
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as e:
        raise CommandRefused(f"payload is not JSON ({e.msg} at character {e.pos})") from None
    except (ValueError, RecursionError) as e:
        raise CommandRefused(f"payload refused: {e}") from None
    if not isinstance(value, dict):
        raise CommandRefused(f"payload must be a JSON object, not {type(value).__name__}")
    return value


def parse_command(kind: Any, raw: Any) -> dict[str, Any]:
    """A checked command: ``{"kind": ..., **its fields}``; ``set_params`` gives its validated ``changes`` and its
    ``source``. Raises CommandRefused naming what is wrong."""
    if kind not in KINDS:
        raise CommandRefused(f"unknown command {str(kind)[:40]!r}")
    payload = parse_payload(raw)
    if kind == "set_params":
        changes = dict(payload)
        source = changes.pop("_source", "command")  # what sent it (slider, research, ...), for the audit
        if source not in COMMAND_SOURCES:
            raise CommandRefused(f"unknown command source {str(source)[:40]!r}")
        if not changes:
            raise CommandRefused("set_params names no parameter")
        try:
            checked = validate_param_changes(changes)
        except ConfigError as e:
            raise CommandRefused(str(e)) from None
        return {"kind": kind, "changes": checked, "source": source}
    try:
        fields = SCHEMAS[kind].model_validate(payload).model_dump()
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "payload"
        msg = str(first.get("msg", "")).removeprefix("Value error, ")
        raise CommandRefused(f"{kind}: {where}: {msg}") from None
    return {"kind": kind, **fields}


def command_who(value: Any) -> str:
    """Who sent it, as the audit records it (a short text; anything else is 'ui')."""
    if isinstance(value, str) and 0 < len(value) <= MAX_WHO and value.isprintable():
        return value
    return "ui"
