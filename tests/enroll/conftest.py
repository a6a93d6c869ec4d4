"""Fixtures of the enrollment tests (the people are made in synthetic_people.py)."""

from __future__ import annotations

import pytest
from neuroauth.enroll.template import Template
from synthetic_people import People, enroll_windows, recording


@pytest.fixture(scope="session")
def make_recording():
    return recording


@pytest.fixture(scope="session")
def people() -> People:
    return People()


@pytest.fixture(scope="session")
def enrolled(people) -> Template:
    return enroll_windows(people, people.owner)


@pytest.fixture
def make_template():
    """Build a small, valid template quickly (no calibration) for file and store tests."""
    from factories import make_template

    return make_template
