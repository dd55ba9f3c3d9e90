"""What a reaction may be: one emoji, as one extended grapheme cluster (issue 25, reactions).

The rule (docs/protocol.md, "Reactions"), checked without a Unicode segmentation library:

- a flag: exactly two regional indicators (🇫🇷);
- a keycap: ``0-9``, ``#`` or ``*``, an optional VS16, then U+20E3 (1️⃣);
- otherwise one or more *elements* joined by ZERO WIDTH JOINER (👩‍💻), where an element is a
  pictographic code point (the emoji blocks listed in ``_PICTOGRAPHIC``), then an optional
  variation selector, an optional skin-tone modifier and optional tag characters ending in
  CANCEL TAG (🏴󠁧󠁢󠁥󠁮󠁧󠁿).

At most ``MAX_EMOJI_BYTES`` bytes of UTF-8: the longest emoji in use (a kiss with two skin
tones, 35 bytes) fits, and a client cannot store an arbitrary string as a "reaction".
"""
from __future__ import annotations

MAX_EMOJI_BYTES = 48

_PICTOGRAPHIC = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x2194, 0x21AA), (0x231A, 0x23FF), (0x24C2, 0x24C2), (0x25AA, 0x25FE),
    (0x2600, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D),
    (0x3297, 0x3299), (0x1F000, 0x1F1E5), (0x1F200, 0x1F3FA), (0x1F400, 0x1FAFF),
)
_REGIONAL = (0x1F1E6, 0x1F1FF)
_SKIN = (0x1F3FB, 0x1F3FF)
_ZWJ, _VS15, _VS16, _KEYCAP, _CANCEL_TAG = 0x200D, 0xFE0E, 0xFE0F, 0x20E3, 0xE007F


def _in(cp: int, lo_hi: tuple) -> bool:
    return lo_hi[0] <= cp <= lo_hi[1]


def _pictographic(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _PICTOGRAPHIC)


def _element(cps: list, at: int) -> int:
    """The index after the element starting at ``at``, or -1 when none starts there."""
    if at >= len(cps) or not _pictographic(cps[at]):
        return -1
    at += 1
    if at < len(cps) and cps[at] in (_VS15, _VS16):
        at += 1
    if at < len(cps) and _in(cps[at], _SKIN):
        at += 1
    if at < len(cps) and 0xE0020 <= cps[at] <= 0xE007E:
        while at < len(cps) and 0xE0020 <= cps[at] <= 0xE007E:
            at += 1
        if at >= len(cps) or cps[at] != _CANCEL_TAG:
            return -1
        at += 1
    return at


def is_emoji(text: object) -> bool:
    """True when ``text`` is one emoji by the rule above (and at most ``MAX_EMOJI_BYTES``)."""
    if not isinstance(text, str) or not text or len(text.encode("utf-8", "surrogatepass")) > MAX_EMOJI_BYTES:
        return False
    cps = [ord(c) for c in text]
    if len(cps) == 2 and all(_in(cp, _REGIONAL) for cp in cps):
        return True
    if text[0] in "0123456789#*" and cps[-1] == _KEYCAP:
        return cps[1:-1] in ([], [_VS16])
    at = _element(cps, 0)
    while at != -1 and at < len(cps):
        if cps[at] != _ZWJ:
            return False
        at = _element(cps, at + 1)
    return at == len(cps)
