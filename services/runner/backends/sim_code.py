"""The simulated model's code blocks: a question about code gets code, as a pair-coder would.

The block is a fenced Markdown block in the language the prompt names (Python when
it names none), with a function named after the prompt's first distinctive words, so
a demo shows code rendered as code while it streams.
"""

from __future__ import annotations

import re

CODE_HINTS = frozenset(
    [
        "code",
        "coding",
        "program",
        "function",
        "script",
        "snippet",
        "implement",
        "implementation",
        "class",
        "method",
        "bug",
        "debug",
        "compile",
        "regex",
        "api",
        "parse",
        "parser",
        "loop",
        "recursion",
        "algorithm",
    ]
)
LANGUAGES = {
    "python": "python",
    "py": "python",
    "javascript": "javascript",
    "js": "javascript",
    "typescript": "javascript",
    "node": "javascript",
    "rust": "rust",
    "go": "go",
    "golang": "go",
    "bash": "bash",
    "shell": "bash",
    "sql": "sql",
}
TEMPLATES = {
    "python": (
        'def {name}(items):\n    """Return the {word} of each item, in order."""\n'
        "    result = []\n    for item in items:\n        result.append(item)\n"
        "    return result\n\n\nprint({name}([1, 2, 3]))"
    ),
    "javascript": (
        "function {camel}(items) {{\n  // the {word} of each item, in order\n"
        "  return items.map((item) => item);\n}}\n\nconsole.log({camel}([1, 2, 3]));"
    ),
    "rust": (
        "fn {name}(items: &[i32]) -> Vec<i32> {{\n    // the {word} of each item, in order\n"
        "    items.iter().copied().collect()\n}}\n\nfn main() {{\n"
        '    println!("{{:?}}", {name}(&[1, 2, 3]));\n}}'
    ),
    "go": (
        "func {camel}(items []int) []int {{\n\t// the {word} of each item, in order\n"
        "\tresult := make([]int, 0, len(items))\n\tfor _, item := range items {{\n"
        "\t\tresult = append(result, item)\n\t}}\n\treturn result\n}}"
    ),
    "bash": '#!/usr/bin/env bash\n# the {word} of each argument, in order\nfor item in "$@"; do\n  echo "$item"\ndone',
    "sql": "-- the {word} of each item, in order\nSELECT id, {name}\nFROM items\nORDER BY id;",
}
_PIECE = re.compile(r"\s*\S+")


def code_language(words: list[str]) -> str | None:
    """The language to answer in, or None when the prompt is not about code."""
    lowered = [word.lower() for word in words]
    named = next((LANGUAGES[word] for word in lowered if word in LANGUAGES), None)
    if named is not None:
        return named
    return "python" if CODE_HINTS.intersection(lowered) else None


def code_block(language: str, words: list[str]) -> list[str]:
    """The block's tokens: its fence, its code a word (with the space before it) at a time."""
    subject = [
        word.lower()
        for word in words
        if word.isascii() and word.isalpha() and word.lower() not in CODE_HINTS.union(LANGUAGES)
    ][:2] or ["solve"]
    name = "_".join(subject)
    camel = subject[0] + "".join(part.capitalize() for part in subject[1:])
    code = TEMPLATES[language].format(name=name, camel=camel, word=" ".join(subject))
    return [f"\n\n```{language}", *_PIECE.findall("\n" + code + "\n```"), "\n\nThis", " covers"]
