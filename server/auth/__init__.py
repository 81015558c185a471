"""Who is calling: bearer access tokens (RFC 6750) verified as JWT access tokens (RFC 9068) into a ``Principal``."""
