"""Card numbers never at rest: mask any PAN-like digit run before it is stored or logged.

A terminal is supposed to give a masked PAN (first six, last four), but firmware, a
misconfiguration or a hostile peer can send the full number: in CardPAN, on a receipt line,
in free text. Whatever it sends, what we keep shows at most the first six and last four digits
(PCI DSS 3.4). A PAN-like run is 13 to 19 digits, optionally grouped by single spaces or
dashes, that passes the Luhn check; an unrelated number passes it one time in ten, and masking
its middle is the safe side of that error.
"""

from __future__ import annotations

import re

# Digits with at most one space or dash between them, not glued to other digits.
_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}(?![0-9])")
_GROUP = re.compile(r"[0-9]+")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _pan_spans(text: str) -> list[tuple[int, int]]:
    """Spans of `text` (a run of digit groups) that are PANs: contiguous runs first, then runs
    of whole groups ("12 4111 1111 1111 1111": the amount before the card is not part of it)."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(text)]
    spans = []
    for start, end in groups:
        if 13 <= end - start <= 19 and luhn_valid(text[start:end]):
            spans.append((start, end))
    if spans:
        return spans
    # Windows of whole groups holding 13-19 digits, longest first. Luhn sums come from prefix
    # sums, so a megabyte of "1 1 1 ..." from a hostile terminal costs milliseconds, not minutes.
    digits = "".join(text[a:b] for a, b in groups)
    luhn_at = _luhn_prefixes(digits)
    bounds, count = [], 0  # digit offset where each group starts
    for a, b in groups:
        bounds.append(count)
        count += b - a
    bounds.append(count)
    i = 0
    while i < len(groups):
        found = None
        j = i
        while j < len(groups) and bounds[j + 1] - bounds[i] <= 19:
            j += 1
        for end in range(j - 1, i - 1, -1):  # last group of the window, longest first
            lo, hi = bounds[i], bounds[end + 1]
            if hi - lo < 13:
                break
            if _luhn_window(luhn_at, lo, hi) % 10 == 0:
                found = end
                break
        if found is None:
            i += 1
        else:
            spans.append((groups[i][0], groups[found][1]))
            i = found + 1
    return spans


def _luhn_prefixes(digits: str) -> tuple[list[int], list[int]]:
    """Prefix sums of digit values where even positions are doubled, and where odd ones are."""
    even, odd = [0], [0]
    for p, char in enumerate(digits):
        n = int(char)
        doubled = n * 2 - 9 if n > 4 else n * 2
        even.append(even[-1] + (doubled if p % 2 == 0 else n))
        odd.append(odd[-1] + (doubled if p % 2 else n))
    return even, odd


def _luhn_window(prefixes, lo: int, hi: int) -> int:
    # Luhn doubles every second digit counting from the right end (hi - 1).
    even, odd = prefixes
    table = even if (hi - 1) % 2 else odd
    return table[hi] - table[lo]


def _mask(match: re.Match) -> str:
    text = match.group(0)
    out = list(text)
    for start, end in _pan_spans(text):
        positions = [k for k in range(start, end) if text[k].isdigit()]
        for k in positions[6:-4]:
            out[k] = "*"
    return "".join(out)


def mask_pans(text: str) -> str:
    """`text` with every PAN-like run masked to first six / last four (separators kept)."""
    if not text or not any(c.isdigit() for c in text):
        return text
    return _CANDIDATE.sub(_mask, text)
