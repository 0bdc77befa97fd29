"""A study's claims against what a run measured: :class:`Claim` and :func:`print_claims`.

Example:
    >>> _ = print_claims([Claim("top eigenvalue positive", "1.0", True)])
    Claims
    -------------------------+----------+-------
     claim                   | measured | holds 
    -------------------------+----------+-------
     top eigenvalue positive | 1.0      | yes   
    -------------------------+----------+-------
    1 of 1 claims hold on this run
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["Claim", "print_claims"]


@dataclass(frozen=True)
class Claim:
    """One claim of a study, what this run measured, and whether it holds."""

    claim: str
    measured: str
    holds: bool

    def to_dict(self) -> dict:
        return {"claim": self.claim, "measured": self.measured, "holds": self.holds}


def print_claims(claims: Sequence[Claim], title: str = "Claims") -> str:
    """Print (and return) a plain-text table of claims."""
    rows = [("claim", "measured", "holds")] + \
        [(c.claim, c.measured, "yes" if c.holds else "NO") for c in claims]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title, line]
    for i, row in enumerate(rows):
        out.append("|".join(f" {cell:<{w}} " for cell, w in zip(row, widths)))
        if i == 0:
            out.append(line)
    out.append(line)
    held = sum(c.holds for c in claims)
    out.append(f"{held} of {len(claims)} claims hold on this run")
    text = "\n".join(out)
    print(text)
    return text
