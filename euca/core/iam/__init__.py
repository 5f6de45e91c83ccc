"""IAM's entities beyond the accounts, users and access keys of euca.core.identity: paths, groups and their
members, inline and managed policies (with versions and attachments), login profiles, roles with trust
policies, instance profiles. Every function takes a store transaction and the account it acts in; the CLC's
IAM API (euca/roles/clc/iam) calls them, and every role that authorises reads a principal's policies through
`policies.effective_documents`.

Modules: `schema` (the tables: namespace "iam" of the store), `common` (errors, ids, ARNs, paging),
`users` (users, groups, membership, access keys, login profiles, signing certificates), `policies` (inline and
managed policies), `roles` (roles and instance profiles)."""
