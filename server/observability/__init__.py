"""Seeing what agents do: Prometheus metrics, OpenTelemetry traces and JSON log lines (docs/operations.md)."""
