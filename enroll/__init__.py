"""Owners: enrollment, templates, scoring and decisions over time."""
