"""Secrets never printed: passwords inside URLs and known secret values are replaced by ``***``.

``http://user:SECRET@host:9200`` → ``http://user:***@host:9200``. Works on any text (log lines, error messages
that quote a URL, malformed URLs), not only on well-formed URLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<password>[^/@\s]*)@")


def mask_urls(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` with the password replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def mask(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with URL passwords and each of ``secrets`` (non-empty ones) replaced by ``***``."""
    masked = mask_urls(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    return masked
