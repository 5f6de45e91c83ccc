"""The CLC's IAM (Eucalyptus's Euare) and STS Query APIs: `app` (the endpoints: authentication, parsing,
authorisation, dispatch, error rendering), `api` (IAM's handlers over euca.core.iam), `sts` (STS's)."""
