"""Faults and bad input made to happen for real (docs/faults.md lists what the user sees)."""
