"""Mandate's side of the 50-tool benchmark catalog (see ``bench.catalog_tools``)."""

from bench.catalog_tools import populate

populate(globals(), 50)
