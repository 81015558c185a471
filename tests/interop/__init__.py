"""Interop tests: Mandate driven by third-party npm peers (MCP Inspector, oauth2-mock-server, TS SDK)."""
