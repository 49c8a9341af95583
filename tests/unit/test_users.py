"""replication.users: role strings, the authorization table, scrypt hashes, authentication."""

from __future__ import annotations

import hmac

import pytest

from durakv.engine.errors import KVError, Status
from durakv.replication import users
from durakv.replication.users import (
    Action,
    AuthenticationError,
    InvalidPasswordError,
    InvalidRoleError,
    InvalidUsernameError,
    PasswordHash,
    Role,
    RoleName,
    ScryptParams,
    User,
    UserError,
    authenticate,
    authorize,
    make_user,
    parse_role,
    parse_roles,
)

FAST = ScryptParams(n=2, r=1, p=1)  # tests only: production cost is users.SCRYPT_DEFAULT


def user_with(*roles: str) -> User:
    return make_user("someone", "password", roles, FAST)


# -- roles -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, role",
    [
        ("admin", Role(RoleName.ADMIN)),
        ("data_reader[travel-sample]", Role(RoleName.DATA_READER, "travel-sample")),
        ("data_writer[b.1_%]", Role(RoleName.DATA_WRITER, "b.1_%")),
        ("data_reader[*]", Role(RoleName.DATA_READER, "*")),
        ("data_writer[*]", Role(RoleName.DATA_WRITER, "*")),
    ],
)
def test_parse_role_valid_round_trips_through_str(text, role):
    assert parse_role(text) == role
    assert str(role) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Admin",
        "admin[b]",
        "admin[*]",
        "data_reader",
        "data_reader[]",
        "data_reader[.hidden]",
        "data_reader[a b]",
        "data_reader[a]x",
        "data_reader[a][b]",
        "data_reader[a",
        "bucket_admin[b]",
        " admin",
        "data_reader[" + "b" * 101 + "]",
        None,
        7,
        b"admin",
    ],
)
def test_parse_role_invalid_raises_invalid_role_error(text):
    with pytest.raises(InvalidRoleError) as info:
        parse_role(text)
    assert info.value.status is Status.EINVAL
    assert info.value.role == text
    assert isinstance(info.value, UserError) and isinstance(info.value, KVError)


def test_parse_roles_deduplicates_and_sorts():
    roles = parse_roles(["data_writer[b]", "admin", "data_reader[*]", "admin", Role(RoleName.DATA_WRITER, "b")])
    assert [str(r) for r in roles] == ["admin", "data_reader[*]", "data_writer[b]"]


@pytest.mark.parametrize(
    "roles", [[], "admin", ["admin", "bogus"], ["admin"] * 0, [f"data_reader[b{i}]" for i in range(65)]]
)
def test_parse_roles_bad_list_raises(roles):
    with pytest.raises(InvalidRoleError):
        parse_roles(roles)


def test_parse_roles_empty_allowed_for_stored_users():
    assert parse_roles([], allow_empty=True) == ()


# -- authorization -----------------------------------------------------------------------
# (roles, action, bucket, allowed)
AUTHORIZE_TABLE = [
    (["admin"], "read", "b", True),
    (["admin"], "write", "b", True),
    (["admin"], "manage", None, True),
    (["admin"], "manage", "b", True),
    (["data_reader[b]"], "read", "b", True),
    (["data_reader[b]"], "read", "c", False),
    (["data_reader[b]"], "write", "b", False),  # a reader cannot write
    (["data_reader[b]"], "manage", "b", False),
    (["data_reader[b]"], "manage", None, False),
    (["data_writer[b]"], "write", "b", True),
    (["data_writer[b]"], "read", "b", False),  # a writer cannot read, as in Couchbase
    (["data_writer[b]"], "write", "c", False),
    (["data_writer[b]"], "manage", "b", False),
    (["data_reader[*]"], "read", "anything", True),
    (["data_reader[*]"], "write", "anything", False),
    (["data_writer[*]"], "write", "anything", True),
    (["data_writer[*]"], "read", "anything", False),
    (["data_reader[*]"], "read", None, False),  # a data role needs a bucket
    (["data_reader[b]", "data_writer[b]"], "read", "b", True),
    (["data_reader[b]", "data_writer[b]"], "write", "b", True),
    (["data_reader[b]", "data_writer[c]"], "write", "b", False),
    (["data_reader[b]", "data_writer[c]"], "write", "c", True),
    (["data_reader[B]"], "read", "b", False),  # bucket names are case-sensitive
]


@pytest.mark.parametrize("roles, action, bucket, allowed", AUTHORIZE_TABLE)
def test_authorize_table(roles, action, bucket, allowed):
    user = user_with(*roles)
    assert authorize(user, action, bucket) is allowed
    assert authorize(user, Action(action), bucket) is allowed


def test_authorize_user_without_roles_may_do_nothing():
    user = User("nobody", (), user_with("admin").password)
    assert not any(authorize(user, action, "b") for action in Action)


def test_authorize_unknown_action_raises_value_error():
    with pytest.raises(ValueError):
        authorize(user_with("admin"), "delete", "b")


# -- names and passwords -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["alice", "Alice.O'Neil", "a", "x" * 128, "user-1_2%", "jörg"])
def test_check_username_valid(name):
    assert users.check_username(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 129, "a b", "a\tb", "a\x00", "a@b", "a:b", "a/b", "a[b]", "(a)", 'a"b', "a=b", "a{b}", None, 5]
)
def test_check_username_invalid_raises(name):
    with pytest.raises(InvalidUsernameError) as info:
        users.check_username(name)
    assert info.value.username == name and info.value.status is Status.EINVAL


@pytest.mark.parametrize("password", ["", "12345", "x" * (users.PASSWORD_LEN_MAX + 1), "é" * 513, None])
def test_hash_password_bad_password_raises(password):
    with pytest.raises(InvalidPasswordError):
        users.hash_password(password, FAST)


@pytest.mark.parametrize(
    "params", [dict(n=3), dict(n=1), dict(n=2**18), dict(r=0), dict(r=17), dict(p=0), dict(p=5), dict(n=2.0)]
)
def test_scrypt_params_out_of_range_raise(params):
    with pytest.raises(UserError):
        ScryptParams(**params)


# -- hashes --------------------------------------------------------------------------------
def test_password_hash_matches_only_its_password():
    hashed = users.hash_password("correct horse", FAST)
    assert hashed.matches("correct horse")
    assert not hashed.matches("correct hors")
    assert not hashed.matches("Correct horse")


def test_password_hash_fresh_salt_per_hash():
    first, second = users.hash_password("password", FAST), users.hash_password("password", FAST)
    assert first.salt != second.salt and first.digest != second.digest
    assert len(first.salt) == users.SALT_SIZE and len(first.digest) == users.DIGEST_SIZE


def test_password_hash_given_salt_is_deterministic():
    salt = bytes(range(16))
    assert users.hash_password("password", FAST, salt=salt) == users.hash_password("password", FAST, salt=salt)
    with pytest.raises(UserError):
        users.hash_password("password", FAST, salt=b"short")


def test_password_hash_default_params_work_and_are_recorded():
    hashed = users.hash_password("password")
    assert hashed.params == users.SCRYPT_DEFAULT == ScryptParams(2**14, 8, 1)
    assert hashed.matches("password")


def test_password_hash_compares_with_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(users.hmac, "compare_digest", spy)
    hashed = users.hash_password("password", FAST)
    assert hashed.matches("password")
    assert calls and calls[0][1] == hashed.digest


def test_password_hash_dict_round_trips_and_rejects_garbage():
    hashed = users.hash_password("password", ScryptParams(4, 2, 1))
    assert PasswordHash.from_dict(hashed.to_dict()) == hashed
    assert PasswordHash.from_dict(hashed.to_dict()).params == ScryptParams(4, 2, 1)
    for bad in ({"algorithm": "md5"}, {"salt": "00"}, {"digest": "zz"}, {"n": 3}):
        with pytest.raises((UserError, ValueError)):
            PasswordHash.from_dict({**hashed.to_dict(), **bad})


def test_user_dict_round_trips_without_plain_password():
    user = make_user("alice", "s3cret-pw", ["data_reader[b]", "admin"], FAST)
    raw = user.to_dict()
    assert User.from_dict(raw) == user
    assert "s3cret-pw" not in repr(raw)
    assert user.describe() == {"name": "alice", "roles": ["admin", "data_reader[b]"]}


def test_without_bucket_drops_only_that_buckets_roles():
    user = make_user(
        "alice", "password", ["data_reader[b]", "data_writer[b]", "data_reader[c]", "data_writer[*]"], FAST
    )
    stripped = users.without_bucket(user, "b")
    assert [str(r) for r in stripped.roles] == ["data_reader[c]", "data_writer[*]"]
    assert users.without_bucket(user, "zz") is None


# -- authentication ------------------------------------------------------------------------
def test_authenticate_right_password_returns_user():
    alice = make_user("alice", "password", ["admin"], FAST)
    assert authenticate({"alice": alice}, "alice", "password") is alice


@pytest.mark.parametrize("name, password", [("alice", "wrong-password"), ("bob", "password"), ("alice", "x" * 2000)])
def test_authenticate_failure_is_one_error_with_auth_status(name, password):
    alice = make_user("alice", "password", ["admin"], FAST)
    with pytest.raises(AuthenticationError) as info:
        authenticate({"alice": alice}, name, password)
    assert info.value.status is Status.AUTH_ERROR


def test_authenticate_unknown_user_still_runs_scrypt(monkeypatch):
    runs = []
    real = users._scrypt
    monkeypatch.setattr(users, "_scrypt", lambda *args: runs.append(args[2]) or real(*args))
    with pytest.raises(AuthenticationError):
        authenticate({}, "nobody", "password")
    assert runs == [users.SCRYPT_DEFAULT]
