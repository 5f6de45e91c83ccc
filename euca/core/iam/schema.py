"""The IAM tables (store namespace "iam", applied after "identity", whose users and access_keys they extend).
Steps are only ever appended."""

from __future__ import annotations

from euca.core.iam import sessions

SCHEMA = [
    """
    ALTER TABLE users ADD COLUMN path TEXT NOT NULL DEFAULT '/';
    ALTER TABLE access_keys ADD COLUMN last_used REAL;
    ALTER TABLE access_keys ADD COLUMN last_used_service TEXT;
    CREATE TABLE iam_groups (
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        name TEXT NOT NULL COLLATE NOCASE,
        group_id TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (account_id, name)
    );
    CREATE TABLE iam_group_members (
        account_id TEXT NOT NULL,
        group_name TEXT NOT NULL COLLATE NOCASE,
        user_name TEXT NOT NULL,
        PRIMARY KEY (account_id, group_name, user_name),
        FOREIGN KEY (account_id, group_name) REFERENCES iam_groups(account_id, name) ON DELETE CASCADE,
        FOREIGN KEY (account_id, user_name) REFERENCES users(account_id, name) ON DELETE CASCADE
    );
    CREATE INDEX iam_group_members_user ON iam_group_members(account_id, user_name);
    CREATE TABLE iam_inline_policies (
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL COLLATE NOCASE,
        name TEXT NOT NULL COLLATE NOCASE,
        document TEXT NOT NULL,
        PRIMARY KEY (account_id, kind, owner, name)
    );
    CREATE TABLE iam_policies (
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        name TEXT NOT NULL COLLATE NOCASE,
        policy_id TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        default_version TEXT NOT NULL,
        next_version INTEGER NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (account_id, name)
    );
    CREATE TABLE iam_policy_versions (
        account_id TEXT NOT NULL,
        policy_name TEXT NOT NULL COLLATE NOCASE,
        version_id TEXT NOT NULL,
        document TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (account_id, policy_name, version_id),
        FOREIGN KEY (account_id, policy_name) REFERENCES iam_policies(account_id, name) ON DELETE CASCADE
    );
    CREATE TABLE iam_attachments (
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL COLLATE NOCASE,
        policy_arn TEXT NOT NULL,
        PRIMARY KEY (account_id, kind, owner, policy_arn)
    );
    CREATE INDEX iam_attachments_policy ON iam_attachments(policy_arn);
    CREATE TABLE iam_login_profiles (
        account_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        reset_required INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (account_id, user_name),
        FOREIGN KEY (account_id, user_name) REFERENCES users(account_id, name) ON DELETE CASCADE
    );
    CREATE TABLE iam_roles (
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        name TEXT NOT NULL COLLATE NOCASE,
        role_id TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        trust_policy TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        max_session INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (account_id, name)
    );
    CREATE TABLE iam_instance_profiles (
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        name TEXT NOT NULL COLLATE NOCASE,
        profile_id TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (account_id, name)
    );
    CREATE TABLE iam_instance_profile_roles (
        account_id TEXT NOT NULL,
        profile_name TEXT NOT NULL COLLATE NOCASE,
        role_name TEXT NOT NULL COLLATE NOCASE,
        PRIMARY KEY (account_id, profile_name, role_name),
        FOREIGN KEY (account_id, profile_name) REFERENCES iam_instance_profiles(account_id, name)
            ON DELETE CASCADE,
        FOREIGN KEY (account_id, role_name) REFERENCES iam_roles(account_id, name) ON DELETE CASCADE
    );
    """,
    # STS's temporary credentials (sessions.py).
    sessions.SCHEMA,
    # Where a key was last used (GetAccessKeyLastUsed's Region).
    "ALTER TABLE access_keys ADD COLUMN last_used_region TEXT;",
]
