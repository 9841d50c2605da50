"""`Item`: one image/mask pair as a source yields it (the local adapters in siamdiff.data.sources and the s3
adapter in siamdiff.storage.ingest both yield these, so neither imports the other's module)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Item:
    """One image/mask pair as a source yields it. `image`/`mask`: array, encoded bytes, or a file path."""

    dataset: str
    patient: str
    frame: str
    image: object
    mask: object
    image_name: str = ""  # for messages: the original file or URL
    mask_name: str = ""

    @property
    def id(self) -> str:
        return f"{self.dataset}-{self.patient}-{self.frame}"
