"""One masking function for every URL and provider error text the app shows, stores or logs (issue 30).

* ``redact_url(url)``: a URL without its secrets: the userinfo password (``redis://:pw@host`` and
  ``redis://user:pw@host``) and the values of query parameters that carry one (``?password=``, ``token=``,
  ``key=``, ``secret=``, ``auth=``, ``sig=`` ...) become ``***``.
* ``mask_secrets(text, settings, extra=())``: any text (an SDK's error message, a Redis error, a log line) with
  every URL redacted, every configured secret's value masked (and the parts of a secret a provider echoes:
  OpenAI answers a wrong key with ``sk-abcd************6677``, so any word holding a secret's first or last
  characters goes too), and anything shaped like an OpenAI key (``sk-...``) or a provider's starred echo of one.

Pure functions, no Streamlit: the engine, the services and the pages all call these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"
# query parameters whose value is a credential (compared lower-case, as a substring of the name)
SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "token", "key", "secret", "auth", "sig", "credential")
# bounded scheme: an unbounded one made every position of a long run of letters scan to its end (quadratic)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s'\"<>)\]}]+")
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{3,}")
_STARS = re.compile(r"\*{4,}")  # a provider's masked echo of a key: 'sk-abcd************6677'
_WORD = re.compile(r"[^\s'\",;:()\[\]{}<>]+")
TAIL = 4  # a secret's last characters that a provider echoes
HEAD = 6  # and its first ones


def _secret_param(name: str) -> bool:
    n = name.lower()
    return any(p in n for p in SECRET_PARAMS)


def redact_url(url: str) -> str:
    """``url`` with its password and credential-bearing query values replaced by ``***`` (never raises)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _pw = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if sep and user else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = []
        for piece in query.split("&"):
            name, eq, _value = piece.partition("=")
            pairs.append(f"{name}={MASK}" if eq and _secret_param(unquote(name)) else piece)
        query = "&".join(pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL (its password, credential query values), as written and decoded."""
    out: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            out += [parts.password, unquote(parts.password)]
        raw_userinfo = parts.netloc.rpartition("@")[0]
        if ":" in raw_userinfo:
            out.append(raw_userinfo.partition(":")[2])
        for name, value in parse_qsl(parts.query, keep_blank_values=False):
            if _secret_param(name) and value:
                out.append(value)
        for piece in parts.query.split("&"):
            name, eq, value = piece.partition("=")
            if eq and value and _secret_param(unquote(name)):
                out.append(value)
    except ValueError:
        pass
    return [s for s in dict.fromkeys(out) if s]


def secret_values(settings: Any) -> list[str]:
    """Every secret a Settings object holds (each SecretStr field's value; a URL's password and tokens too)."""
    if settings is None:
        return []
    from pydantic import SecretStr

    out: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            if raw.strip():
                out.append(raw)
                out.append(raw.strip())
                if "://" in raw:
                    out += url_secrets(raw.strip())
    return [s for s in dict.fromkeys(out) if s]


def _mask_starred(text: str) -> str:
    """Every word holding four stars or more becomes ``***`` (in linear time: a regex with ``\\S*`` on both sides
    of the stars went quadratic on a long error message)."""
    out: list[str] = []
    last = 0
    for m in _STARS.finditer(text):
        start, end = m.start(), m.end()
        if start < last:
            continue
        while start > last and not text[start - 1].isspace():
            start -= 1
        while end < len(text) and not text[end].isspace():
            end += 1
        out += [text[last:start], MASK]
        last = end
    out.append(text[last:])
    return "".join(out)


def mask_secrets(text: Any, settings: Any = None, extra: Iterable[str] = ()) -> str:
    """``text`` (anything; str() of it) safe to show, store or log: see the module docstring."""
    out = str(text)
    secrets = sorted({s for s in [*secret_values(settings), *extra] if s and len(s) >= 3}, key=len, reverse=True)
    for s in secrets:
        out = out.replace(s, MASK)
    out = _URL.sub(lambda m: redact_url(m.group(0)), out)
    out = _OPENAI_KEY.sub(f"sk-{MASK}", out)
    out = _mask_starred(out)
    # what is left of a secret a provider echoed in part: a word with its first or last characters (a URL's
    # own head and tail are not secret: its password and tokens are among ``secrets`` on their own)
    parts = {p for s in secrets if len(s) >= 8 and "://" not in s for p in (s[:HEAD], s[-TAIL:])}
    if parts:
        out = _WORD.sub(lambda m: MASK if any(p in m.group(0) for p in parts) else m.group(0), out)
    return out
