"""Users, their password hashes and roles, and who may do what. Pure except for salts.

Owns: user-name and role-string rules, scrypt password hashing (a random per-user salt and
cost parameters stored with each hash, so the cost can be raised later without breaking old
hashes), password checks, and `authorize`. It does no I/O and reads no clock; the only
impure step is drawing a salt from `secrets` when none is passed in.

Roles, named as Couchbase names them (docs.couchbase.com, "Roles"):

    admin                   everything, on every bucket and the cluster
    data_reader[<bucket>]   read documents of <bucket>; `*` for every bucket
    data_writer[<bucket>]   write (insert/upsert/replace/remove) documents of <bucket>; `*` too

As in Couchbase ("the Data Writer role ... does not let the user read data"), a data
writer cannot read and a data reader cannot write; `manage` (buckets, scopes, collections,
users, nodes, failover) is `admin` only. The minimum password length, 6, is Couchbase's
default password policy.

Invariants: a password is never stored, only its scrypt digest; digests are compared with
`hmac.compare_digest`; a user's roles are parsed, deduplicated and sorted (one spelling
each); authenticating an unknown user runs one scrypt at the default cost, like a wrong password
for a user hashed at that cost, so response time does not reveal which user names exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from durakv.engine.errors import KVError, Status
from durakv.engine.manifest import check_bucket_name

USERNAME_LEN_MAX = 128  # characters
PASSWORD_LEN_MIN = 6  # characters, Couchbase's default password policy
PASSWORD_LEN_MAX = 1024  # bytes of UTF-8: bounds the work one authentication costs
ROLES_PER_USER_MAX = 64
SALT_SIZE = 16  # bytes
DIGEST_SIZE = 32  # bytes
SCRYPT_N_MAX = 2**17  # OWASP's recommended cost; 128 MiB with r = 8
SCRYPT_R_MAX = 16
SCRYPT_P_MAX = 4

ALL_BUCKETS = "*"
# No whitespace, control characters, or the separators and brackets that would make a name
# ambiguous in a header, a URL or a role string (Couchbase refuses much the same set).
_USERNAME_RE = re.compile(r"[^\s\x00-\x1f\x7f()<>@,;:\\\"/\[\]?={}]+")
_ROLE_RE = re.compile(r"([a-z_]+)(?:\[([^\[\]]*)\])?")


class UserError(KVError):
    """A user name, password or role string breaks a rule (EINVAL); nothing was changed."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.EINVAL, message)


class InvalidUsernameError(UserError):
    """The user name is empty, too long, or holds a character Couchbase refuses."""

    def __init__(self, username: object) -> None:
        super().__init__(f"invalid user name {username!r}")
        self.username = username


class InvalidPasswordError(UserError):
    """The password is too short or too long."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class InvalidRoleError(UserError):
    """A role string is not `admin`, `data_reader[b]` or `data_writer[b]` with a valid bucket."""

    def __init__(self, role: object, reason: str) -> None:
        super().__init__(f"invalid role {role!r}: {reason}")
        self.role = role


class AuthenticationError(KVError):
    """Unknown user or wrong password (AUTH_ERROR); which of the two is never said."""

    def __init__(self) -> None:
        super().__init__(Status.AUTH_ERROR, "authentication failed")


class Action(StrEnum):
    """What a request wants to do."""

    READ = "read"
    WRITE = "write"
    MANAGE = "manage"


class RoleName(StrEnum):
    ADMIN = "admin"
    DATA_READER = "data_reader"
    DATA_WRITER = "data_writer"


_GRANTS = {RoleName.DATA_READER: Action.READ, RoleName.DATA_WRITER: Action.WRITE}


@dataclass(frozen=True, order=True)
class Role:
    """One role: `bucket` is None for `admin`, a bucket name or `*` for the data roles."""

    name: RoleName
    bucket: str | None = None

    def __str__(self) -> str:
        return self.name.value if self.bucket is None else f"{self.name.value}[{self.bucket}]"

    def allows(self, action: Action, bucket: str | None) -> bool:
        if self.name is RoleName.ADMIN:
            return True
        if bucket is None or _GRANTS[self.name] is not action:
            return False
        return self.bucket == ALL_BUCKETS or self.bucket == bucket


def parse_role(text: object) -> Role:
    """`admin`, `data_reader[travel-sample]`, `data_writer[*]` -> Role; InvalidRoleError otherwise."""
    if not isinstance(text, str):
        raise InvalidRoleError(text, "a role is a string")
    match = _ROLE_RE.fullmatch(text)
    if match is None:
        raise InvalidRoleError(text, "expected name or name[bucket]")
    try:
        name = RoleName(match.group(1))
    except ValueError:
        raise InvalidRoleError(text, f"unknown role; known: {', '.join(r.value for r in RoleName)}") from None
    bucket = match.group(2)
    if name is RoleName.ADMIN:
        if bucket is not None:
            raise InvalidRoleError(text, "admin takes no bucket")
        return Role(name)
    if bucket is None:
        raise InvalidRoleError(text, f"{name.value} needs a bucket: {name.value}[<bucket>] or {name.value}[*]")
    if bucket != ALL_BUCKETS:
        try:
            check_bucket_name(bucket)
        except KVError as exc:
            raise InvalidRoleError(text, exc.message) from None
    return Role(name, bucket)


def parse_roles(texts: Iterable[object], *, allow_empty: bool = False) -> tuple[Role, ...]:
    """Parse, deduplicate and sort; 1 (0 if `allow_empty`) to ROLES_PER_USER_MAX roles.

    A new user needs a role; a stored one may have none left after its buckets were dropped.
    """
    if isinstance(texts, str | bytes) or not isinstance(texts, Iterable):
        raise InvalidRoleError(texts, "roles are a list of role strings")
    texts = list(texts)
    roles = tuple(sorted({role if isinstance(role, Role) else parse_role(role) for role in texts}))
    if not (0 if allow_empty else 1) <= len(roles) <= ROLES_PER_USER_MAX:
        raise InvalidRoleError(texts, f"a user has 1..{ROLES_PER_USER_MAX} roles")
    return roles


def check_username(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= USERNAME_LEN_MAX or not _USERNAME_RE.fullmatch(name):
        raise InvalidUsernameError(name)
    return name


# -- password hashes ---------------------------------------------------------------------
@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: n (CPU/memory, a power of two), r (block size), p (parallelism)."""

    n: int = 2**14  # 16 MiB with r = 8: tens of milliseconds per check
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        for name, value, high in (
            ("n", self.n, SCRYPT_N_MAX),
            ("r", self.r, SCRYPT_R_MAX),
            ("p", self.p, SCRYPT_P_MAX),
        ):
            if type(value) is not int or not 1 <= value <= high:
                raise UserError(f"scrypt {name} must be an integer in 1..{high}, not {value!r}")
        if self.n < 2 or self.n & (self.n - 1):
            raise UserError(f"scrypt n must be a power of two >= 2, not {self.n}")

    @property
    def memory_size_max(self) -> int:
        # What OpenSSL needs (128*r*(n+p+2) bytes) plus slack; hashlib's default cap is 32 MiB.
        return 128 * self.r * (self.n + self.p + 2) + 1024 * 1024


SCRYPT_DEFAULT = ScryptParams()


@dataclass(frozen=True)
class PasswordHash:
    """A salted scrypt digest of a password, with the parameters it was made with."""

    params: ScryptParams
    salt: bytes
    digest: bytes

    def matches(self, password: str) -> bool:
        candidate = _scrypt(password, self.salt, self.params)
        return hmac.compare_digest(candidate, self.digest)

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": "scrypt",
            "n": self.params.n,
            "r": self.params.r,
            "p": self.params.p,
            "salt": self.salt.hex(),
            "digest": self.digest.hex(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PasswordHash:
        if raw["algorithm"] != "scrypt":
            raise UserError(f"unknown password hash algorithm {raw['algorithm']!r}")
        salt, digest = bytes.fromhex(raw["salt"]), bytes.fromhex(raw["digest"])
        if len(salt) != SALT_SIZE or len(digest) != DIGEST_SIZE:
            raise UserError("password hash salt or digest has the wrong size")
        return cls(ScryptParams(raw["n"], raw["r"], raw["p"]), salt, digest)


def hash_password(password: str, params: ScryptParams = SCRYPT_DEFAULT, *, salt: bytes | None = None) -> PasswordHash:
    """Hash with a fresh random salt (or the given one, for tests of determinism)."""
    check_password(password)
    salt = secrets.token_bytes(SALT_SIZE) if salt is None else salt
    if len(salt) != SALT_SIZE:
        raise UserError(f"a salt is {SALT_SIZE} bytes")
    return PasswordHash(params, salt, _scrypt(password, salt, params))


def check_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < PASSWORD_LEN_MIN:
        raise InvalidPasswordError(f"a password has at least {PASSWORD_LEN_MIN} characters")
    if len(password.encode()) > PASSWORD_LEN_MAX:
        raise InvalidPasswordError(f"a password has at most {PASSWORD_LEN_MAX} bytes")
    return password


def _scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.memory_size_max,
        dklen=DIGEST_SIZE,
    )


# -- users -------------------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    """A user: name, roles (parsed, sorted, unique) and password hash."""

    name: str
    roles: tuple[Role, ...]
    password: PasswordHash

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "roles": [str(role) for role in self.roles], "password": self.password.to_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> User:
        roles = parse_roles(raw["roles"], allow_empty=True)
        return cls(check_username(raw["name"]), roles, PasswordHash.from_dict(raw["password"]))

    def describe(self) -> dict[str, Any]:
        """What the management API shows: no hash, no salt."""
        return {"name": self.name, "roles": [str(role) for role in self.roles]}


def make_user(name: str, password: str, roles: Iterable[str | Role], params: ScryptParams = SCRYPT_DEFAULT) -> User:
    """A new user with a freshly salted hash; typed errors for a bad name, password or role."""
    return User(check_username(name), parse_roles(roles), hash_password(password, params))


def without_bucket(user: User, bucket: str) -> User | None:
    """The user with every role on `bucket` removed (a dropped bucket); None if unchanged."""
    kept = tuple(role for role in user.roles if role.bucket != bucket)
    return None if kept == user.roles else User(user.name, kept, user.password)


def authorize(user: User, action: Action | str, bucket: str | None) -> bool:
    """Whether `user` may `action` on `bucket` (None: a cluster-level request)."""
    if action.__class__ is not Action:
        action = Action(action)
    return any(role.allows(action, bucket) for role in user.roles)


# Checked when the user does not exist, so the answer takes as long as a wrong password.
_DUMMY_HASH = PasswordHash(SCRYPT_DEFAULT, bytes(SALT_SIZE), bytes(DIGEST_SIZE))


def authenticate(users: Mapping[str, User], name: str, password: str) -> User:
    """The user whose name and password these are; AuthenticationError otherwise."""
    user = users.get(name) if isinstance(name, str) else None
    if not isinstance(password, str) or len(password.encode()) > PASSWORD_LEN_MAX:
        raise AuthenticationError()
    if user is None:
        _DUMMY_HASH.matches(password)
        raise AuthenticationError()
    if not user.password.matches(password):
        raise AuthenticationError()
    return user
