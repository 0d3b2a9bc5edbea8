"""The README is what a new user follows: its first commands and its settings table must be true."""

from __future__ import annotations

from service.config import settings_table

from .support import ROOT


def test_readme_settings_table_is_the_code():
    assert settings_table() in (ROOT / "README.md").read_text(), "run `python -m service.config` and paste it"


def test_readme_starts_with_serve_and_test_commands():
    head = (ROOT / "README.md").read_text().split("```sh", 1)[1].split("```", 1)[0]
    assert "make serve" in head and "make test" in head
    makefile = (ROOT / "Makefile").read_text()
    assert "\nserve:" in makefile and "\ntest:" in makefile
