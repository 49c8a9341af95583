"""Authenticators passed in `ClusterOptions` (Couchbase SDK names).

Only password authentication exists in durakv; the embedded mode needs none.
"""

from __future__ import annotations

from typing import Any


class Authenticator(dict):
    """Base of the authenticators: a dict of the credentials it carries."""

    def valid_keys(self) -> list[str]:
        return list(self.keys())


class PasswordAuthenticator(Authenticator):
    """Username and password (RBAC)."""

    def __init__(self, username: str, password: str, **kwargs: Any) -> None:
        super().__init__(username=username, password=password)
        # Couchbase accepts cert_path / allowed_sasl_mechanisms here; keep them for the
        # remote backend to use or ignore.
        self.update({k: v for k, v in kwargs.items() if v is not None})

    @property
    def username(self) -> str:
        return self["username"]

    @property
    def password(self) -> str:
        return self["password"]

    def as_dict(self) -> dict[str, Any]:
        return dict(self)

    def __repr__(self) -> str:
        return f"PasswordAuthenticator(username={self['username']!r}, password=<redacted>)"
