"""``--help`` texts from docstrings, as a person at a terminal should read them.

Docstrings are written for the code's readers (reST roles, double backticks, notes
on how a module is built); a help text keeps the first paragraph, in plain words.
"""

from __future__ import annotations

import argparse
import re

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(doc: str | None, paragraphs: int = 1) -> str:
    """The first ``paragraphs`` of ``doc`` with reST markup removed."""
    text = "\n\n".join((doc or "").strip().split("\n\n")[:paragraphs])
    return _LITERAL.sub(r"\1", _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], text))


def parser(prog: str, doc: str | None, paragraphs: int = 1) -> argparse.ArgumentParser:
    """An argument parser whose description is the plain text of ``doc``."""
    return argparse.ArgumentParser(
        prog=prog,
        description=plain(doc, paragraphs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
