"""The MMVP benchmark ("Eyes Wide Shut") as released, read from a local folder (nothing is
downloaded): ``Questions.csv`` (``Index, Question, Options, Correct Answer``, options
written ``(a) Open (b) Closed``, the answer ``(a)``) and ``MMVP Images/<Index>.jpg``.

Images ``2k - 1`` and ``2k`` (1-based) form a pair. Each question is its own kind
(``mmvp:<Index>``) with its own options, which the model is shown after the question;
the right answer is the correct option's text. An optional ``pattern`` (or ``Type``)
column names each question's visual pattern.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from PIL import Image

from interp.errors import ConfigError
from interp.sources.base import Question, SourceOpener, register_source
from interp.sources.tabular import TabularImages

__all__ = ["MMVPImages"]

QUESTIONS = "Questions.csv"
IMAGES = "MMVP Images"
_OPTION = re.compile(r"\(([a-z])\)\s*(.*?)\s*(?=\([a-z]\)|$)", re.IGNORECASE)


class MMVPImages(TabularImages):
    """MMVP's images and questions in the folder ``root``; ``n_images`` keeps the first
    ones (an even number keeps whole pairs)."""

    def __init__(self, root: str | Path, *, n_images: int | None = None, **_: Any) -> None:
        self.root = Path(root)
        table = pd.read_csv(self.root / QUESTIONS)
        table.columns = [str(c).strip() for c in table.columns]
        index = next((c for c in table.columns if c.lower() in ("index", "lndex")), None)
        needed = {"Question", "Options", "Correct Answer"} - set(table.columns)
        if index is None or needed:
            raise ConfigError(
                f"{self.root / QUESTIONS} needs the columns Index, Question, Options and "
                f"Correct Answer (MMVP's release), got {', '.join(table.columns)}"
            )
        table = table.iloc[:n_images].reset_index(drop=True)
        self.index = [int(v) for v in table[index]]
        self.paths = [self.root / IMAGES / f"{i}.jpg" for i in self.index]
        self._options: list[tuple[str, ...]] = []
        answers = []
        for row, (options, correct) in enumerate(
            zip(table["Options"], table["Correct Answer"], strict=True)
        ):
            found = dict((k.lower(), v.strip()) for k, v in _OPTION.findall(str(options)))
            key = re.sub(r"[^a-z]", "", str(correct).lower())[:1]
            if len(found) < 2 or key not in found:
                raise ConfigError(
                    f"{self.root / QUESTIONS} row {row + 2}: options {options!r} and answer "
                    f"{correct!r} are not in MMVP's form ('(a) x (b) y', '(a)')"
                )
            self._options.append(tuple(found.values()))
            answers.append(found[key])
        for path in self.paths:
            if not path.is_file():
                raise ConfigError(f"no image {path}: MMVP's images lie in '{IMAGES}/<Index>.jpg'")
        pattern = next((c for c in table.columns if c.lower() in ("pattern", "type")), None)
        self.patterns = list(table[pattern].astype(str)) if pattern else ["mmvp"] * len(table)
        frame = pd.DataFrame(
            {
                "image": [str(p) for p in self.paths],
                "question": [
                    f"{q} {o}" for q, o in zip(table["Question"], table["Options"], strict=True)
                ],
                "answer": answers,
            }
        )
        self._hash = hashlib.sha256((self.root / QUESTIONS).read_bytes()).hexdigest()
        super().__init__(frame, name=f"MMVP in {self.root}")

    def _open_image(self, i: int) -> Image.Image:
        return Image.open(self.paths[i])

    def _open_mask(self, i: int) -> Image.Image:
        raise ConfigError("MMVP has no object masks")

    def _has_mask(self, i: int) -> bool:
        return False

    def _row(self, i: int) -> str:
        return f"MMVP question {self.index[i]}"

    def names(self) -> list[str]:
        return [str(path) for path in self.paths]

    def questions(self) -> list[Question]:
        return [
            Question(i, f"mmvp:{self.index[i]}", q, a, self._options[i])
            for i, (q, a) in enumerate(
                zip(self.frame["question"], self.frame["answer"], strict=True)
            )
        ]

    def pairs(self) -> pd.DataFrame:
        """Images ``2k`` and ``2k + 1`` (0-based), with the pattern of the first."""
        i = list(range(0, len(self) - 1, 2))
        return pd.DataFrame(
            {"i": i, "j": [k + 1 for k in i], "pattern": [self.patterns[k] for k in i]}
        )

    def describe(self) -> dict[str, Any]:
        return {
            "source": "mmvp",
            "path": str(self.root),
            "questions_sha256": self._hash,
            "n_images": len(self),
        }


@register_source
class MMVPOpener(SourceOpener):
    name: ClassVar[str] = "MMVP (Questions.csv and 'MMVP Images/')"

    @classmethod
    def recognises(cls, path: Path) -> bool:
        return path.is_dir() and (path / QUESTIONS).is_file() and (path / IMAGES).is_dir()

    @classmethod
    def open(cls, path: Path, **options: Any) -> MMVPImages:
        return MMVPImages(path, n_images=options.get("n_images"))
