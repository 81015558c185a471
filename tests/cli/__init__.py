"""Tests of the command line: start-up speed, start-up errors, quiet output, `mandate init`."""
