"""Tests of the token verification layer, server/auth."""
