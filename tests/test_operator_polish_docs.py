"""The README is the operator's manual: its links lead somewhere, and it
documents every option the command line has."""

from __future__ import annotations

import argparse
import re
import subprocess

from daemon_support import REPO

from daemon import cli as cli_module

README = REPO / "README.md"


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped,
    spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_within_itself_lead_to_headings() -> None:
    """Every `(#fragment)` link in the README names one of its headings."""
    text = README.read_text(encoding="utf-8")
    headings = {
        anchor(line.lstrip("#"))
        for line in text.splitlines()
        if re.match(r"#{1,6} ", line)
    }

    links = set(re.findall(r"\]\(#([^)]+)\)", text))

    assert links
    assert links - headings == set()


def test_no_file_points_at_the_merged_operator_guide() -> None:
    """docs/operator.md became the README's "Operating stocksync"; nothing
    tracked or new still refers to it."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    stale = [
        name
        for name in listed
        if (REPO / name).is_file()
        and "docs/operator.md" in (REPO / name).read_text(errors="replace")
        and name != "tests/test_operator_polish_docs.py"
    ]

    assert not (REPO / "docs" / "operator.md").exists()
    assert "## Operating stocksync" in README.read_text(encoding="utf-8")
    assert stale == []


def test_readme_documents_every_command_line_option() -> None:
    """Each long option of each command appears in the README, and so does
    the way to run the installed command from the checkout."""
    text = README.read_text(encoding="utf-8")
    options = {
        option
        for parser in _parsers(cli_module._parser())
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }

    assert options
    assert sorted(o for o in options if o not in text) == []
    assert ".venv/bin/stocksync" in text
    assert ". .venv/bin/activate" in text


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found
