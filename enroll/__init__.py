"""Owners: enrolment, templates, scoring and decisions over time."""
