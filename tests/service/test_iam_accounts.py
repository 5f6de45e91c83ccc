"""Euare's account operations (the cloud administrator's CreateAccount, ListAccounts, DeleteAccount, and
DelegateAccount on any call), `euca admin` as their client, and the endpoints written for the AWS tools."""

from __future__ import annotations

import configparser
import os
import subprocess
from typing import Any

import pytest
from click.testing import CliRunner

from euca.cli import main
from euca.core.euare_client import EuareClient, EuareError, members, text
from helpers.aws_cli import aws_executable
from helpers.iam import new_account, refused
from helpers.server import Credentials, EucaServer


def euare(euca: EucaServer, creds: Credentials) -> EuareClient:
    return EuareClient(euca.url, creds.access_key, creds.secret_key, euca.region)


def code_of(call: Any) -> str:
    with pytest.raises(EuareError) as e:
        call()
    return e.value.code


def test_cloud_admin_manages_accounts(euca: EucaServer) -> None:
    admin = euare(euca, euca.admin)
    created = admin.call("CreateAccount", {"AccountName": "acct-api"})
    account_id = text(created, "Account/AccountId")
    assert len(account_id) == 12
    names = [text(m, "AccountName") for m in members(admin.call("ListAccounts"), "Accounts")]
    assert "acct-api" in names and "eucalyptus" in names
    assert code_of(lambda: admin.call("CreateAccount", {"AccountName": "acct-api"})) == "EntityAlreadyExists"
    # Acting in the new account: its users, keys, policies.
    admin.call("CreateUser", {"UserName": "worker", "DelegateAccount": "acct-api"})
    listed = admin.call("ListUsers", {"DelegateAccount": account_id})
    assert sorted(text(m, "UserName") for m in members(listed, "Users")) == ["admin", "worker"]
    key = admin.call("CreateAccessKey", {"UserName": "admin", "DelegateAccount": "acct-api"})
    creds = Credentials(
        text(key, "AccessKey/AccessKeyId"), text(key, "AccessKey/SecretAccessKey"), "acct-api", ""
    )
    assert euca.client("sts", creds=creds).get_caller_identity()["Account"] == account_id
    assert code_of(lambda: admin.call("ListUsers", {"DelegateAccount": "no-such-account"})) == "NoSuchEntity"
    # Not empty: refused unless recursive; then its keys stop at once.
    assert code_of(lambda: admin.call("DeleteAccount", {"AccountName": "acct-api"})) == "DeleteConflict"
    admin.call("DeleteAccount", {"AccountName": "acct-api", "Recursive": "true"})
    assert refused(lambda: euca.client("sts", creds=creds).get_caller_identity()) == "InvalidClientTokenId"
    assert code_of(lambda: admin.call("DeleteAccount", {"AccountName": "eucalyptus"})) == "AccessDenied"


def test_only_the_cloud_admin(euca: EucaServer) -> None:
    other = euare(euca, new_account(euca))
    assert code_of(lambda: other.call("ListAccounts")) == "AccessDenied"
    assert code_of(lambda: other.call("CreateAccount", {"AccountName": "sneaky"})) == "AccessDenied"
    assert code_of(lambda: other.call("ListUsers", {"DelegateAccount": "eucalyptus"})) == "AccessDenied"


def test_euca_admin_creates_accounts_through_the_api(
    euca: EucaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    original = EuareClient.call

    def recording(self: EuareClient, action: str, params: dict[str, str] | None = None) -> Any:
        sent.append(action)
        return original(self, action, params)

    monkeypatch.setattr(EuareClient, "call", recording)
    port = euca.url.rsplit(":", 1)[1]
    base = ["--data-dir", str(euca.data_dir), "--set", f"clc.listen.port={port}"]
    result = CliRunner().invoke(main, [*base, "admin", "create-account", "cli-made"])
    assert result.exit_code == 0, result.output
    assert sent[:2] == ["CreateAccount", "CreateAccessKey"]
    lines = dict(line.split("\t", 1) for line in result.output.splitlines())
    key_id, secret = lines["ACCESSKEY"].split("\t")
    creds = Credentials(key_id, secret, "cli-made", "")
    assert euca.client("iam", creds=creds).get_user()["User"]["UserName"] == "admin"
    listed = CliRunner().invoke(main, [*base, "admin", "list-accounts"])
    assert "cli-made" in listed.output and "ListAccounts" in sent

    # The credentials directory names IAM and STS for the AWS tools and euca2ools.
    directory = euca.data_dir / "credentials" / "cli-made" / "admin"
    eucarc = (directory / "eucarc").read_text()
    assert "AWS_IAM_URL=" in eucarc and "EUARE_URL=" in eucarc and "/services/Euare" in eucarc
    assert "AWS_STS_URL=" in eucarc and "TOKEN_URL=" in eucarc and "/services/Tokens" in eucarc
    config = configparser.ConfigParser()
    config.read(directory / "aws-config")
    assert "/services/Euare" in config["services euca-services"]["iam"]
    # The aws CLI with only the written files reaches STS at its path.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_CONFIG_FILE": str(directory / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(directory / "aws-credentials"),
        "AWS_PROFILE": "euca",
    }
    out = subprocess.run(
        [aws_executable(), "sts", "get-caller-identity", "--debug"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "/services/Tokens" in out.stderr and '"Arn"' in out.stdout

    gone = CliRunner().invoke(main, [*base, "admin", "delete-account", "cli-made", "--recursive"])
    assert gone.exit_code == 0, gone.output and "DeleteAccount" in sent
    assert refused(lambda: euca.client("iam", creds=creds).get_user()) == "InvalidClientTokenId"
