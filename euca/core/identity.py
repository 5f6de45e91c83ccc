"""Accounts, users and access keys (IAM-lite), kept in the state store.

The CLC administers them; every role that authenticates users looks keys up here.
The `eucalyptus` account is the cloud administrators' account, as in Eucalyptus.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from euca.core.store import Store, Tx

ADMIN_ACCOUNT = "eucalyptus"
ADMIN_USER = "admin"

SCHEMA = [
    """
    CREATE TABLE accounts (
        account_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        canonical_id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    );
    CREATE TABLE users (
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        user_id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        PRIMARY KEY (account_id, name)
    );
    CREATE TABLE access_keys (
        access_key_id TEXT PRIMARY KEY,
        secret_key TEXT NOT NULL,
        account_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL,
        FOREIGN KEY (account_id, user_name) REFERENCES users(account_id, name) ON DELETE CASCADE
    );
    """,
]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_USER_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")


class IdentityError(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    """Who made a request."""

    account_id: str
    account_name: str
    canonical_id: str
    user_name: str
    access_key_id: str

    @property
    def is_cloud_admin(self) -> bool:
        return self.account_name == ADMIN_ACCOUNT

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:user/{self.user_name}"


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_key: str
    active: bool
    principal: Principal


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    canonical_id: str


def _new_access_key_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "AKI" + "".join(secrets.choice(alphabet) for _ in range(17))


def _new_secret() -> str:
    return secrets.token_urlsafe(30)[:40]


class Identity:
    # Looked-up keys are cached briefly: every request needs one, and disabling a key must still take effect soon.
    CACHE_SECONDS = 5.0

    def __init__(self, store: Store):
        self.store = store
        store.migrate("identity", SCHEMA)
        self._cache: dict[str, tuple[float, AccessKey | None]] = {}

    # -- lookups used on every request ---------------------------------------------------------

    async def access_key(self, access_key_id: str) -> AccessKey | None:
        now = time.monotonic()
        hit = self._cache.get(access_key_id)
        if hit is not None and now - hit[0] < self.CACHE_SECONDS:
            return hit[1]
        key = await self.store.read(lambda tx: _load_key(tx, access_key_id))
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[access_key_id] = (now, key)
        return key

    async def account_by_id(self, account_id: str) -> Account | None:
        return await self.store.read(lambda tx: _load_account(tx, "account_id", account_id))

    async def account_by_canonical_id(self, canonical_id: str) -> Account | None:
        return await self.store.read(lambda tx: _load_account(tx, "canonical_id", canonical_id))

    async def account_by_name(self, name: str) -> Account | None:
        return await self.store.read(lambda tx: _load_account(tx, "name", name))

    def forget_cached(self) -> None:
        self._cache.clear()

    # -- administration (synchronous: CLI and first start) -------------------------------------

    def create_account(self, name: str) -> Account:
        if not _NAME_RE.match(name):
            raise IdentityError(f"invalid account name {name!r}: lowercase letters, digits, '.' and '-'")

        def fn(tx: Tx) -> Account:
            if tx.one("SELECT 1 FROM accounts WHERE name=?", (name,)):
                raise IdentityError(f"account {name} already exists")
            while True:
                account_id = f"{secrets.randbelow(10**12):012d}"
                if not tx.one("SELECT 1 FROM accounts WHERE account_id=?", (account_id,)):
                    break
            canonical_id = secrets.token_hex(32)
            tx.execute(
                "INSERT INTO accounts(account_id, name, canonical_id, created) VALUES(?,?,?,?)",
                (account_id, name, canonical_id, time.time()),
            )
            _insert_user(tx, account_id, ADMIN_USER)
            return Account(account_id, name, canonical_id)

        return self.store.write_sync(fn)

    def create_user(self, account_name: str, user_name: str) -> None:
        if not _USER_RE.match(user_name):
            raise IdentityError(f"invalid user name {user_name!r}")

        def fn(tx: Tx) -> None:
            account_id = _account_id(tx, account_name)
            if tx.one("SELECT 1 FROM users WHERE account_id=? AND name=?", (account_id, user_name)):
                raise IdentityError(f"user {user_name} already exists in account {account_name}")
            _insert_user(tx, account_id, user_name)

        self.store.write_sync(fn)

    def create_access_key(self, account_name: str, user_name: str = ADMIN_USER) -> AccessKey:
        def fn(tx: Tx) -> str:
            account_id = _account_id(tx, account_name)
            if not tx.one("SELECT 1 FROM users WHERE account_id=? AND name=?", (account_id, user_name)):
                raise IdentityError(f"no user {user_name} in account {account_name}")
            akid = _new_access_key_id()
            tx.execute(
                "INSERT INTO access_keys(access_key_id, secret_key, account_id, user_name, active, created) "
                "VALUES(?,?,?,?,1,?)",
                (akid, _new_secret(), account_id, user_name, time.time()),
            )
            return akid

        akid = self.store.write_sync(fn)
        key = self.store.read_sync(lambda tx: _load_key(tx, akid))
        assert key is not None
        return key

    def set_access_key_active(self, access_key_id: str, active: bool) -> None:
        def fn(tx: Tx) -> None:
            if not tx.execute(
                "UPDATE access_keys SET active=? WHERE access_key_id=?", (1 if active else 0, access_key_id)
            ):
                raise IdentityError(f"no access key {access_key_id}")

        self.store.write_sync(fn)
        self._cache.pop(access_key_id, None)

    def delete_access_key(self, access_key_id: str) -> None:
        def fn(tx: Tx) -> None:
            if not tx.execute("DELETE FROM access_keys WHERE access_key_id=?", (access_key_id,)):
                raise IdentityError(f"no access key {access_key_id}")

        self.store.write_sync(fn)
        self._cache.pop(access_key_id, None)

    def list_accounts(self) -> list[Account]:
        rows = self.store.read_sync(lambda tx: tx.all("SELECT account_id, name, canonical_id FROM accounts ORDER BY name"))
        return [Account(r["account_id"], r["name"], r["canonical_id"]) for r in rows]

    def list_users(self, account_name: str) -> list[str]:
        def fn(tx: Tx) -> list[str]:
            account_id = _account_id(tx, account_name)
            return [r[0] for r in tx.all("SELECT name FROM users WHERE account_id=? ORDER BY name", (account_id,))]

        return self.store.read_sync(fn)

    def list_access_keys(self, account_name: str | None = None) -> list[AccessKey]:
        def fn(tx: Tx) -> list[AccessKey]:
            if account_name is None:
                ids = [r[0] for r in tx.all("SELECT access_key_id FROM access_keys ORDER BY created")]
            else:
                account_id = _account_id(tx, account_name)
                ids = [
                    r[0]
                    for r in tx.all(
                        "SELECT access_key_id FROM access_keys WHERE account_id=? ORDER BY created", (account_id,)
                    )
                ]
            return [k for k in (_load_key(tx, i) for i in ids) if k is not None]

        return self.store.read_sync(fn)

    def ensure_admin(self) -> tuple[Account, AccessKey, bool]:
        """The `eucalyptus` account with one active admin key; created on first start. Returns (.., created)."""
        accounts = {a.name: a for a in self.list_accounts()}
        created = False
        if ADMIN_ACCOUNT not in accounts:
            accounts[ADMIN_ACCOUNT] = self.create_account(ADMIN_ACCOUNT)
            created = True
        account = accounts[ADMIN_ACCOUNT]
        keys = [k for k in self.list_access_keys(ADMIN_ACCOUNT) if k.active and k.principal.user_name == ADMIN_USER]
        if not keys:
            keys = [self.create_access_key(ADMIN_ACCOUNT, ADMIN_USER)]
            created = True
        return account, keys[0], created


def _insert_user(tx: Tx, account_id: str, name: str) -> None:
    tx.execute(
        "INSERT INTO users(account_id, name, user_id, created) VALUES(?,?,?,?)",
        (account_id, name, "AID" + secrets.token_hex(9).upper(), time.time()),
    )


def _account_id(tx: Tx, account_name: str) -> str:
    account_id = tx.scalar("SELECT account_id FROM accounts WHERE name=?", (account_name,))
    if account_id is None:
        raise IdentityError(f"no account {account_name}")
    return str(account_id)


def _load_account(tx: Tx, column: str, value: str) -> Account | None:
    assert column in ("account_id", "canonical_id", "name")
    row = tx.one(f"SELECT account_id, name, canonical_id FROM accounts WHERE {column}=?", (value,))
    return None if row is None else Account(row["account_id"], row["name"], row["canonical_id"])


def _load_key(tx: Tx, access_key_id: str) -> AccessKey | None:
    row = tx.one(
        "SELECT k.access_key_id, k.secret_key, k.active, k.user_name, a.account_id, a.name, a.canonical_id "
        "FROM access_keys k JOIN accounts a ON a.account_id = k.account_id WHERE k.access_key_id=?",
        (access_key_id,),
    )
    if row is None:
        return None
    principal = Principal(
        account_id=row["account_id"],
        account_name=row["name"],
        canonical_id=row["canonical_id"],
        user_name=row["user_name"],
        access_key_id=row["access_key_id"],
    )
    return AccessKey(row["access_key_id"], row["secret_key"], bool(row["active"]), principal)
