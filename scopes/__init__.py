"""Mandate."""
