"""Security groups (EC2-Classic): records.py owns clc_security_groups and clc_security_group_rules and the
group rules (the default group, duplicates, groups in use by other groups); rules.py checks and normalises
the permissions a request asks for (pure); api.py answers the security group actions, handed by
euca/roles/clc/__init__.py the instances' answer to "which instances use this group"."""
