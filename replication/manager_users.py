"""Users at the cluster manager: who is calling the Admin service, and replacing a user.

Owns `Authenticator`, which turns a call's `authorization` metadata into a `Principal`:
- `Basic base64(user:password)`: checked against the users' scrypt hashes (off the event
  loop); a successful check is cached, keyed by a keyed hash of the credentials and
  valid only while the user's stored digest is the same, so scrypt runs once per user and
  password, and a changed password or dropped user is never served from the cache.
- `Bearer <cluster secret>`: a node (or a tool holding the secret file); allowed every call.
Missing or wrong credentials are `AuthenticationError` (the Admin service ends the call
with UNAUTHENTICATED). Also `upsert_user`, the one rule about users the configuration
model (`cluster_config`) lacks: replacing an existing user.

Must never: keep a password or the secret in the cache in clear (only an HMAC under a
per-process random key), cache a failed check, or decide what an RPC needs (the Admin
service says which `Action`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from durakv.replication import users as users_mod
from durakv.replication.cluster_config import ClusterConfig, ClusterConfigError, Refusal
from durakv.replication.users import Action, AuthenticationError, Role, RoleName, User

AUTH_CACHE_SIZE_MAX = 1024  # cached successful password checks


# -- a rule the configuration model lacks: replacing a user ----------------------------------
def upsert_user(
    config: ClusterConfig,
    name: str,
    password: str | None,
    roles: Iterable[str | Role],
    params: users_mod.ScryptParams = users_mod.SCRYPT_DEFAULT,
) -> ClusterConfig:
    """Replace an existing user's roles (and password, unless None), under create_user's rules.

    Refused as ClusterConfigError: a role on a missing bucket, or taking admin away from
    the last admin (as drop_user refuses dropping it).
    """
    existing = config.users.get(name)
    if existing is None:
        raise ClusterConfigError(Refusal.USER_NOT_FOUND, f"user {name!r} not found")
    parsed = users_mod.parse_roles(roles)
    for role in parsed:
        if role.bucket not in (None, users_mod.ALL_BUCKETS) and role.bucket not in config.buckets:
            raise ClusterConfigError(Refusal.BUCKET_NOT_FOUND, f"role {role} names a bucket that does not exist")
    admin = Role(RoleName.ADMIN)
    admins = [u.name for u in config.users.values() if admin in u.roles]
    if admins == [name] and admin not in parsed:
        raise ClusterConfigError(Refusal.LAST_ADMIN, f"user {name!r} is the last admin")
    hashed = existing.password if password is None else users_mod.hash_password(password, params)
    users = {**config.users, name: User(name, parsed, hashed)}
    return dataclasses.replace(config, revision=config.revision + 1, users=users)


# -- authentication ----------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, or (user None) a holder of the cluster secret."""

    user: User | None

    @property
    def is_node(self) -> bool:
        return self.user is None

    def may(self, action: Action, bucket: str | None = None) -> bool:
        return self.user is None or users_mod.authorize(self.user, action, bucket)


class Authenticator:
    """Checks the `authorization` metadata of a call against a configuration."""

    def __init__(self, cache_size_max: int = AUTH_CACHE_SIZE_MAX) -> None:
        self._cache_key = secrets.token_bytes(32)  # the cache holds no plain-crackable hashes
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()  # credentials -> the digest they matched
        self._cache_size_max = cache_size_max

    async def authenticate(self, config: ClusterConfig, metadata: Iterable[tuple[str, object]]) -> Principal:
        """The caller; AuthenticationError for missing or wrong credentials."""
        values = [value for key, value in metadata if key == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            raise AuthenticationError()
        scheme, _, credential = values[0].partition(" ")
        if scheme.lower() == "bearer":
            if config.check_secret(credential.strip()):
                return Principal(None)
            raise AuthenticationError()
        if scheme.lower() != "basic":
            raise AuthenticationError()
        try:
            name, sep, password = base64.b64decode(credential.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError() from None
        if not sep:
            raise AuthenticationError()
        key = hmac.new(self._cache_key, json.dumps([name, password]).encode(), hashlib.sha256).digest()
        user = config.users.get(name)
        cached = self._cache.get(key)
        if user is not None and cached is not None and hmac.compare_digest(cached, user.password.digest):
            self._cache.move_to_end(key)
            return Principal(user)
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(None, users_mod.authenticate, config.users, name, password)
        self._cache[key] = user.password.digest
        while len(self._cache) > self._cache_size_max:
            self._cache.popitem(last=False)
        return Principal(user)
