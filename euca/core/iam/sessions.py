"""STS's temporary credentials: an `ASIA...` access key id, a secret and a session token, for a user
(GetSessionToken) or an assumed role (AssumeRole), until they expire. Kept in the store (table sts_sessions)
so every process that authenticates finds them; `Identity` loads them like any key and `auth` checks the
token and the expiry."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from euca.core.store import Tx

KEY_PREFIX = "ASIA"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# Rows past their expiry are kept a day (a late request still gets ExpiredToken rather than an unknown key).
KEEP_EXPIRED = 86400.0

SCHEMA = """
    CREATE TABLE sts_sessions (
        access_key_id TEXT PRIMARY KEY,
        secret_key TEXT NOT NULL,
        token TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        user_name TEXT NOT NULL,
        role_name TEXT,
        role_id TEXT NOT NULL DEFAULT '',
        session_name TEXT,
        created REAL NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX sts_sessions_expires ON sts_sessions(expires);
"""


@dataclass(frozen=True)
class Session:
    access_key_id: str
    secret_key: str
    token: str
    account_id: str
    # The user the credentials were issued to (GetSessionToken), or who assumed the role.
    user_name: str
    role_name: str | None
    role_id: str
    session_name: str | None
    expires: float


def create(
    tx: Tx,
    account_id: str,
    user_name: str,
    now: float,
    duration: float,
    role_name: str | None = None,
    role_id: str = "",
    session_name: str | None = None,
) -> Session:
    tx.execute("DELETE FROM sts_sessions WHERE expires < ?", (now - KEEP_EXPIRED,))
    session = Session(
        access_key_id=KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(16)),
        secret_key=secrets.token_urlsafe(30)[:40],
        token=secrets.token_urlsafe(96),
        account_id=account_id,
        user_name=user_name,
        role_name=role_name,
        role_id=role_id,
        session_name=session_name,
        expires=now + duration,
    )
    tx.execute(
        "INSERT INTO sts_sessions(access_key_id, secret_key, token, account_id, user_name, role_name, role_id, "
        "session_name, created, expires) VALUES(?,?,?,?,?,?,?,?,?,?)",
        (
            session.access_key_id,
            session.secret_key,
            session.token,
            account_id,
            user_name,
            role_name,
            role_id,
            session_name,
            now,
            session.expires,
        ),
    )
    return session


def load(tx: Tx, access_key_id: str) -> Session | None:
    row = tx.one(
        "SELECT access_key_id, secret_key, token, account_id, user_name, role_name, role_id, session_name, expires "
        "FROM sts_sessions WHERE access_key_id=?",
        (access_key_id,),
    )
    if row is None:
        return None
    return Session(
        row["access_key_id"],
        row["secret_key"],
        row["token"],
        row["account_id"],
        row["user_name"],
        row["role_name"],
        row["role_id"],
        row["session_name"],
        row["expires"],
    )
