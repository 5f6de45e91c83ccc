"""Quotas as Eucalyptus had them: `"Effect": "Limit"` statements in identity policies, with quota keys
(`ec2:quota-vminstancenumber`, `s3:quota-bucketnumber`, `iam:quota-usernumber`...) under
NumericLessThanEquals. An account's quotas are the Limit statements on its `admin` user (set by the cloud
administrator: an account admin may not change the policies of its own admin user); a user's are those on the
user (set by its account's admin). A request is refused when what it adds would pass either.

    found = await quota_limits(identity, principal, "ec2:RunInstances", "*")
    check(found, "ec2:quota-vminstancenumber", current=2, adding=1)   # raises QuotaExceeded past the limit
"""

from __future__ import annotations

from euca.core.authorize import owner_policies
from euca.core.identity import ADMIN_USER, Identity, Principal
from euca.protocol import policy


class QuotaExceeded(Exception):
    def __init__(self, key: str, limit: int, current: int, adding: int):
        super().__init__(f"{key} is {limit}: {current} in use, {adding} more asked")
        self.key, self.limit, self.current, self.adding = key, limit, current, adding

    @property
    def left(self) -> int:
        return max(0, self.limit - self.current)


async def quota_limits(
    identity: Identity, principal: Principal, action: str, resource: str, account_id: str | None = None
) -> dict[str, int]:
    """The account's (the principal's, or `account_id`: a bucket's owner) and, for a user other than admin,
    the user's limits on `action`, the smaller of each."""
    account = await owner_policies(identity, account_id or principal.account_id, "user", ADMIN_USER)
    found = policy.limits(account.policies, action, resource)
    if principal.role_name is None and principal.user_name != ADMIN_USER:
        own = await owner_policies(identity, principal.account_id, "user", principal.user_name)
        for key, value in policy.limits(own.policies, action, resource).items():
            found[key] = min(found.get(key, value), value)
    return found


def check(found: dict[str, int], key: str, *, current: int, adding: int) -> None:
    limit = found.get(key)
    if limit is not None and adding > 0 and current + adding > limit:
        raise QuotaExceeded(key, limit, current, adding)
