"""Text as the database and the view filters need it, the same in SQL and in Python."""

from __future__ import annotations

FINAL_SIGMA, SIGMA = "\u03c2", "\u03c3"


def fold(text: str) -> str:
    """Case folding for contains/not_contains, identical to the SQL side. Final sigma
    folds to sigma: a search for sigma finds words ending in final sigma, and Python
    and ICU, which decide "final" by different Unicode versions, cannot disagree."""
    return text.lower().replace(FINAL_SIGMA, SIGMA)


def storable(text: str) -> bool:
    """Text a database can take as a parameter: PostgreSQL refuses NUL, and neither
    driver can encode a lone surrogate (which JSON may carry as an escape)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
