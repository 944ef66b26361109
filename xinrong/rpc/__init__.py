"""gRPC plumbing shared by every party: server factory, channels, auth, error mapping."""
