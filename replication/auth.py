"""Who is calling a node: credentials from gRPC metadata, checked against the pushed users and the secret.

Owns: parsing the `authorization` metadata (`Basic base64(user:password)` for users,
`Bearer <cluster secret>` for the manager and other nodes), the users a node knows (from the
pushed `UserRecord`s, as `replication.users.User`), the credential cache, and role checks
through `replication.users.authorize`.

The cache (docs/cluster-protocol.md, "Authentication"): a successful password check is
remembered as (keyed digest of user name and password) -> the password hash it matched. A
later call with the same credentials is accepted without scrypt only while the user's
current hash is still that one, so a changed password or a dropped user takes effect with
the next configuration; roles are always read from the current user. Failures are never
cached. scrypt runs off the event loop (`authenticate` awaits it in the default executor).

Must never: keep a password or the secret in the cache in clear (only an HMAC under a
per-process random key), tell a caller which part of a credential was wrong, or decide what
an operation needs (the services say which `Action` each RPC is).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from durakv.proto import cluster_pb2
from durakv.replication import config_proto
from durakv.replication import users as users_mod
from durakv.replication.config_proto import ConfigProtoError
from durakv.replication.node_config import ConfigError
from durakv.replication.users import Action, PasswordHash, User

AUTH_METADATA_KEY = "authorization"
AUTH_VALUE_LEN_MAX = 4096  # bytes of one authorization value; longer is refused unread
CREDENTIAL_CACHE_MAX = 4096  # entries; the least recently used goes first
CLUSTER_PRINCIPAL = "@cluster"  # the name a Bearer caller is known by in logs


class AuthenticationFailed(Exception):
    """Missing, malformed or wrong credentials: the call ends with gRPC UNAUTHENTICATED."""


class UsersUnknown(AuthenticationFailed):
    """A user's credentials, before the node has received any users: they cannot be checked yet.

    Not the caller's fault (a node that has just started waits for its first configuration):
    services answer TMPFAIL, which the SDK retries, rather than UNAUTHENTICATED, which it does not.
    """


@dataclass(frozen=True)
class Basic:
    username: str
    password: str


@dataclass(frozen=True)
class Bearer:
    token: str


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user, or the cluster itself (manager, other nodes: `user` None)."""

    name: str
    user: User | None

    @property
    def is_cluster(self) -> bool:
        return self.user is None

    def allows(self, action: Action, bucket: str | None) -> bool:
        return self.user is None or users_mod.authorize(self.user, action, bucket)


CLUSTER = Principal(CLUSTER_PRINCIPAL, None)


def parse_authorization(metadata: Sequence[tuple[str, str | bytes]] | None) -> Basic | Bearer:
    """The credentials in call metadata; AuthenticationFailed when absent or malformed."""
    values = [v for k, v in metadata or () if k == AUTH_METADATA_KEY]
    if len(values) != 1:
        raise AuthenticationFailed("expected exactly one authorization header")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if len(value) > AUTH_VALUE_LEN_MAX:
        raise AuthenticationFailed("authorization header too long")
    scheme, _, rest = value.partition(" ")
    scheme, rest = scheme.lower(), rest.strip()
    if scheme == "bearer" and rest:
        return Bearer(rest)
    if scheme == "basic" and rest:
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationFailed("malformed basic credentials") from None
        username, sep, password = decoded.partition(":")
        if sep and username:
            return Basic(username, password)
    raise AuthenticationFailed("unsupported authorization scheme")


def basic_metadata(username: str, password: str) -> tuple[tuple[str, str], ...]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return ((AUTH_METADATA_KEY, f"Basic {token}"),)


def bearer_metadata(secret: str) -> tuple[tuple[str, str], ...]:
    return ((AUTH_METADATA_KEY, f"Bearer {secret}"),)


def users_from_proto(records: Iterable[cluster_pb2.UserRecord]) -> dict[str, User]:
    """The pushed users (checked by `config_proto`); ConfigError for a malformed record."""
    result: dict[str, User] = {}
    for record in records:
        try:
            user = config_proto.user_record_from_proto(record)
        except ConfigProtoError as exc:
            raise ConfigError(str(exc)) from None
        if user.name in result:
            raise ConfigError(f"user {user.name!r} is listed twice")
        result[user.name] = user
    return result


class Authenticator:
    """Checks the credentials of calls against the users and cluster secrets it was given.

    Used from one event loop thread; only the scrypt computation leaves it.
    """

    def __init__(self, secrets_: Iterable[str] = ()) -> None:
        self._secrets = tuple(s for s in secrets_ if s)
        self._users: Mapping[str, User] = {}
        self.users_known = False  # set once a configuration with users has been installed
        self._cache: OrderedDict[bytes, PasswordHash] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)

    def set_secrets(self, secrets_: Iterable[str]) -> None:
        """The cluster secrets a Bearer caller may present (the secret file's, the pushed one)."""
        self._secrets = tuple(s for s in secrets_ if s)

    def set_users(self, users: Mapping[str, User]) -> None:
        self._users = dict(users)
        self.users_known = True

    def check_secret(self, token: str) -> bool:
        encoded = token.encode()
        # Every secret is compared (no early exit), each in constant time.
        return sum(hmac.compare_digest(encoded, s.encode()) for s in self._secrets) > 0

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        """The caller; AuthenticationFailed when the credentials are missing or wrong."""
        credentials = parse_authorization(metadata)
        if isinstance(credentials, Bearer):
            if not self.check_secret(credentials.token):
                raise AuthenticationFailed("wrong cluster secret")
            return CLUSTER
        if not self.users_known:
            raise UsersUnknown("this node has not received its users yet")
        key = self._cache_key_of(credentials)
        users = self._users
        user = users.get(credentials.username)
        if user is not None:
            cached = self._cache.get(key)
            if cached is not None and cached == user.password:
                self._cache.move_to_end(key)
                return Principal(user.name, user)
        loop = asyncio.get_running_loop()
        try:
            user = await loop.run_in_executor(
                None, users_mod.authenticate, users, credentials.username, credentials.password
            )
        except users_mod.AuthenticationError:
            raise AuthenticationFailed("wrong user name or password") from None
        self._cache[key] = user.password
        self._cache.move_to_end(key)
        while len(self._cache) > CREDENTIAL_CACHE_MAX:
            self._cache.popitem(last=False)
        current = self._users.get(user.name)  # the users may have changed while scrypt ran
        if current is None or current.password != user.password:
            raise AuthenticationFailed("wrong user name or password")
        return Principal(current.name, current)

    def _cache_key_of(self, credentials: Basic) -> bytes:
        message = credentials.username.encode() + b"\0" + credentials.password.encode()
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()


async def caller_or_abort(authenticator: Authenticator, context) -> Principal | None:
    """A gRPC call's caller; None for a user while the node has no users yet (the service answers
    TMPFAIL); bad or missing credentials end the call UNAUTHENTICATED."""
    import grpc

    try:
        return await authenticator.authenticate(context.invocation_metadata())
    except UsersUnknown:
        return None
    except AuthenticationFailed as exc:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        raise  # not reached: abort raises
