"""The data subject's side: an enterprise's signing key, its consents and revocations."""
