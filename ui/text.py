"""Untrusted text (a run's name, a bar file's name or symbols, an error quoting a file's cell) inside the
Markdown that st.markdown, st.caption, st.success, st.error, st.info and st.warning render: ``plain`` makes it
show as typed. ``[x](http://evil)`` is not a link, ``**`` not bold, ``:red[…]`` not coloured, ``$…$`` not LaTeX,
``<b>`` not a tag, ``http://…`` and ``www.…`` not auto-linked; a line break cannot start a heading or a list."""

from __future__ import annotations

import re
from collections.abc import Sequence

# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that make structure in Streamlit's
# Markdown (links and images need "[", emphasis, code, HTML and <autolinks>, headings, tables, strikethrough, LaTeX,
# :directives[…], e-mail autolinks); ":", "." and "-" only where they would (before //, after www, at the start).
# "(" and ")" stay: without "[" they make nothing, and "Alpaca history (iex feed)" reads as it did.
_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$@])")
_WWW = re.compile(r"(?i)\bwww\.")
_SCHEME = re.compile(r":(?=//)")  # http://… : an autolink without it
_START = re.compile(r"^([-+]|\d+[.)])")


def plain(text: object) -> str:
    """``text`` escaped for Streamlit Markdown: it renders exactly as given, on one line."""
    s = " ".join(str(text).split())
    s = _SPECIAL.sub(r"\\\1", s)
    s = _WWW.sub(lambda m: m.group(0)[:-1] + "\\.", s)
    s = _SCHEME.sub("\\:", s)
    return _START.sub(lambda m: "\\" + m.group(1) if m.group(1) in "+-" else m.group(1)[:-1] + "\\" + m.group(1)[-1],
                      s)


def plain_list(items: Sequence[object], limit: int = 20) -> str:
    """At most ``limit`` items, comma-separated and escaped, then "… and K more": a caption of 10,000 symbols
    stays one line."""
    shown = ", ".join(plain(i) for i in items[:limit])
    rest = len(items) - limit
    return f"{shown} … and {rest:,} more" if rest > 0 else shown
