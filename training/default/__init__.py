"""Shipped default training config, calibration and checkpoint (package data)."""
