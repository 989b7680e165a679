"""Bad-data accounting: every skipped sample is counted under a reason and named, never dropped silently.

Readers raise `BadSample(reason, file, detail)` for data that cannot be used (unreadable file, truncated image,
missing caption, broken tar member, ...) and `Filtered(reason)` for data that is fine but excluded by a policy
(NSFW, too small, ...). The loader turns both into counts on a `SkipCounter`, which

  * logs the first few files per reason as they happen and a summary per epoch,
  * travels with the checkpoint (`to_dict()` / `SkipCounter.load(d)`), so counts survive a restart,
  * stops the run (`check`) with a message listing the files once the bad-sample rate passes a threshold.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from shared.io import write_json

log = logging.getLogger("shared.data")

# Reasons used by the readers in this package; others may add their own.
REASONS = {
    "unreadable": "the file could not be read (missing, permissions, I/O error)",
    "not_an_image": "the bytes are not an image PIL can identify (garbage or wrong format)",
    "truncated": "the image ends early (partial download or copy)",
    "undecodable": "PIL identified the image but failed to decode it",
    "too_large": "the image exceeds PIL's decompression-bomb limit",
    "missing_caption": "no caption (no caption file, empty caption, or caption key absent)",
    "missing_image": "a sample without an image member",
    "missing_field": "a requested metadata field is absent",
    "bad_metadata": "the sample's JSON metadata does not parse",
    "broken_member": "a tar member that cannot be read (corrupt header, truncated archive)",
    "unreadable_shard": "a shard file that cannot be opened",
}


class BadSample(Exception):
    """A sample that cannot be used; carries the reason and the file for the skip report."""

    def __init__(self, reason: str, file: str, detail: str = ""):
        super().__init__(f"{file}: {reason}" + (f" ({detail})" if detail else ""))
        self.reason, self.file, self.detail = reason, str(file), detail


class Filtered(Exception):
    """A readable sample excluded by a filter (not bad data; not counted towards the skip rate)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TooManyBadSamples(RuntimeError):
    """The share of bad samples passed `max_skip_rate`; the message lists the files per reason."""


class SkipCounter:
    """Counts of skipped samples per reason, with the files named (up to `max_files` per reason)."""

    def __init__(self, max_files: int = 200, log_first: int = 5):
        self.max_files = max_files
        self.log_first = log_first
        self.seen = 0  # samples attempted (good + bad; filtered ones included)
        self.counts: dict[str, int] = {}
        self.files: dict[str, list[str]] = {}
        self.filtered: dict[str, int] = {}
        self.named: dict[str, int] = {}  # samples accounted for by the named files, per reason

    # -- recording -------------------------------------------------------------------------------------------
    def record(self, reason: str, file: str, detail: str = "", count: int = 1) -> None:
        """`count` samples lost for one cause (e.g. the rest of a truncated shard), named once."""
        n = self.counts.get(reason, 0) + count
        self.counts[reason] = n
        files = self.files.setdefault(reason, [])
        if len(files) < self.max_files:
            # one cause, many samples (the rest of a cut shard): named once, with how many and why
            files.append(str(file) if count == 1 else f"{file} [{count} samples: {detail}]")
            self.named[reason] = self.named.get(reason, 0) + count
        if n - count < self.log_first:
            log.warning("skipped %s: %s%s", file, reason, f" ({detail})" if detail else "")
        elif 0 < self.log_first and n - count <= self.log_first < n:  # log_first=0: the caller reports
            log.warning("more samples skipped for '%s'; further ones are counted, not logged", reason)

    def record_filtered(self, reason: str, n: int = 1) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + n

    def add_seen(self, n: int = 1) -> None:
        self.seen += n

    def absorb(self, events: Iterable[tuple[str, str, str]], seen: int = 0,
               filtered: Mapping[str, int] | None = None) -> None:
        """Add what a loader worker reported alongside a batch."""
        for event in events:  # (reason, file, detail) or (reason, file, detail, count)
            self.record(*event)
        self.seen += seen
        for reason, n in (filtered or {}).items():
            self.record_filtered(reason, n)

    # -- reading ---------------------------------------------------------------------------------------------
    @property
    def bad(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.bad / self.seen if self.seen else 0.0

    def summary(self) -> str:
        if not self.counts and not self.filtered:
            return f"{self.seen} samples read, none skipped"
        parts = [f"{self.bad} of {self.seen} samples skipped as bad ({self.rate:.2%})"]
        parts += [f"{r}={n}" for r, n in sorted(self.counts.items())]
        if self.filtered:
            parts.append("filtered: " + ", ".join(f"{r}={n}" for r, n in sorted(self.filtered.items())))
        return "; ".join(parts)

    def listing(self, per_reason: int = 20) -> str:
        """The bad files per reason, for error messages and logs."""
        lines = []
        for reason, n in sorted(self.counts.items()):
            files = self.files.get(reason, [])
            shown = files[:per_reason]
            more = n - (self.named.get(reason, len(files)) if len(shown) == len(files) else len(shown))
            lines.append(f"  {reason} ({n}): " + ", ".join(shown) + (f", ... and {more} more" if more else ""))
        return "\n".join(lines)

    def check(self, max_rate: float, min_seen: int = 0) -> None:
        """Raise TooManyBadSamples if more than `max_rate` of at least `min_seen` samples were bad."""
        if self.seen and self.seen >= min_seen and self.rate > max_rate:
            raise TooManyBadSamples(
                f"{self.bad} of {self.seen} samples were bad ({self.rate:.1%}), above max_skip_rate="
                f"{max_rate:g}; fix or remove these files (or raise max_skip_rate):\n{self.listing()}")

    # -- persistence -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "bad": self.bad, "counts": dict(self.counts),
                "files": {k: list(v) for k, v in self.files.items()}, "filtered": dict(self.filtered),
                "named": dict(self.named)}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        self.seen = int(d.get("seen", 0))
        self.counts = {str(k): int(v) for k, v in d.get("counts", {}).items()}
        self.files = {str(k): [str(f) for f in v] for k, v in d.get("files", {}).items()}
        self.filtered = {str(k): int(v) for k, v in d.get("filtered", {}).items()}
        self.named = {str(k): int(v) for k, v in d.get("named", {}).items()}

    @classmethod
    def load(cls, d: Mapping[str, Any], **kw) -> "SkipCounter":
        c = cls(**kw)
        c.load_state_dict(d)
        return c

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())
