"""The governance files as one set of texts — ``workflows/*.yaml`` and ``rules/*.yaml`` — read
from a folder (``--config``) or from the database (the published set), so both are parsed by
the same readers and compared by one content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qip_flow.errors import InvalidInput

PARTS = ("workflows", "rules")


@dataclass(frozen=True)
class GovernanceFiles:
    """File texts by relative name (``rules/closure.yaml``), and where they came from: a
    folder, or ``published`` (then ``folder`` is a label, never read)."""

    texts: Mapping[str, str]
    origin: str
    folder: Path = field(default=Path("published"))

    @classmethod
    def from_folder(cls, folder: Path) -> GovernanceFiles:
        """Every ``*.yaml`` under ``folder/workflows`` and ``folder/rules``."""
        if not (folder / "workflows").is_dir():
            raise InvalidInput(f"{folder} has no workflows/ folder; point at the folder that "
                               "holds workflows/ and rules/")
        texts: dict[str, str] = {}
        for part in PARTS:
            for path in sorted((folder / part).glob("*.yaml")):
                try:
                    texts[f"{part}/{path.name}"] = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise InvalidInput(f"{path}: cannot be read ({exc})") from None
        return cls(texts, str(folder), folder)

    @property
    def version(self) -> str:
        """One content hash for the whole set: the same files give the same version wherever
        they are kept."""
        digest = hashlib.sha256()
        for name in sorted(self.texts):
            digest.update(f"{name}\0{self.texts[name]}\0".encode())
        return f"config@{digest.hexdigest()[:12]}"

    def part(self, part: str) -> list[tuple[Path, str]]:
        """The files of one part (``rules`` or ``workflows``) as (path, text), sorted; the
        path names the file in messages."""
        return [(self.folder / name, text) for name, text in sorted(self.texts.items())
                if name.startswith(f"{part}/")]

    def differences(self, other: GovernanceFiles) -> list[str]:
        """The files that differ from ``other``'s, by name."""
        names = sorted(set(self.texts) | set(other.texts))
        return [n for n in names if self.texts.get(n) != other.texts.get(n)]
