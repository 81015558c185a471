"""Mandate's side of the 1,000-tool benchmark catalog (see ``bench.catalog_tools``)."""

from bench.catalog_tools import populate

populate(globals(), 1000)
