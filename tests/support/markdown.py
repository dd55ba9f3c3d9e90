"""The fenced blocks of the project's Markdown documents, as the documentation tests read them."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\S*)\s*$")
CODE = re.compile(r'"code":\s*"([a-z_]+)"')


@dataclass
class Block:
    """One fenced block: where it is, its language, its lines as (document line, text)."""
    doc: str
    line: int
    lang: str
    lines: list
    follow_text: list = field(default_factory=list)  # a terminal's output, as the document shows it

    @property
    def text(self) -> str:
        return "\n".join(t for _, t in self.lines)

    def script(self) -> list:
        """(document line, bash line) pairs that bash runs, in order."""
        if self.lang != "console":
            return list(self.lines)
        out, continued = [], False
        for number, text in self.lines:
            if text.startswith("$ "):
                out.append((number, text[2:]))
            elif continued:
                out.append((number, text))
            else:
                continue
            continued = text.rstrip().endswith("\\")
        return out

    def shown(self) -> list:
        """The output the document shows: console output lines, or ``# …`` comments of sh."""
        if self.lang == "console":
            commands = {n for n, _ in self.script()}
            return [t for n, t in self.lines if n not in commands]
        return [t.strip()[1:] for _, t in self.lines if t.strip().startswith("#")]

    def shown_errors(self) -> list:
        """Error codes shown as answers, in order."""
        return [code for line in self.shown() if '"error"' in line for code in CODE.findall(line)]

    def is_terminal(self) -> bool:
        """A block whose last command is a foreground stream: a terminal of its own."""
        commands = [t for _, t in self.script() if t.strip() and not t.strip().startswith("#")]
        return self.lang != "console" and bool(commands) and re.match(r"curl\s+(-\S+\s+)*-N\b", commands[-1].strip()) \
            is not None and not commands[-1].rstrip().endswith("&")

    def streams(self) -> bool:
        """Whether the block reads a stream or long-polls (its events are then checked)."""
        return bool(re.search(r"curl\b[^\n]*\s-[a-zA-Z]*N\b", self.text) or "/poll/" in self.text)

    def where(self) -> str:
        return f"{self.doc}, the {self.lang} block at line {self.line}"


def fenced_blocks(doc: str) -> list:
    """Every fenced block of ``doc``; a ``text`` block is attached to the block before it."""
    blocks, current = [], None
    for number, text in enumerate((ROOT / doc).read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(text)
        if current is None and match:
            current = Block(doc, number, match.group(1), [])
        elif current is not None and text.startswith("```"):
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append((number, text))
    return blocks
