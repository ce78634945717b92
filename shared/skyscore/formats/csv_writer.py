"""CSV output: ``row[,<id>],label,probability_<class>...``, the same bytes with or without pyarrow.

Probabilities are written to 9 significant digits (always enough to read a float32 back
exactly), in the text Arrow's CSV writer gives (:func:`significant_text`). Where pyarrow is
installed a chunk is written by Arrow's C++ writer off the GIL from :func:`round_significant`
values; otherwise rows are formatted in bulk (:func:`significant_texts`, one ``%``-template
per row over column lists).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from skyscore.formats.base import Encoder, Writable
from skyscore.formats.csv_arrow import ArrowCsv, ArrowTexts
from skyscore.formats.csv_records import CSV_SPECIAL, csv_field
from skyscore.model.schema import Batch


def csv_ids(ids: Sequence[Any] | None, n: int) -> list[str]:
    if ids is None:
        return [""] * n
    texts = [v if isinstance(v, str) else ("" if v is None else str(v)) for v in ids]
    if CSV_SPECIAL.search("".join(texts)) is None:
        return texts
    return [csv_field(t) for t in texts]


SIGNIFICANT_DIGITS = 9  # always enough to read a float32 back exactly
_EXPONENT = re.compile(r"^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$")


def significant_text(value: float) -> str:
    """``value`` to 9 significant digits, written the way Arrow's CSV writer writes numbers.

    That is the shortest decimal of the 9-digit rounding, positional from 1e-6 up to 1e10 and
    with a bare exponent outside (``1.5e-7``, ``2e+10``). It is the one float text both CSV
    encoders produce, so output bytes do not depend on whether pyarrow is installed.
    """
    text = f"{value:.9g}"
    found = _EXPONENT.match(text)
    if found is None:
        return text
    sign, head, tail = found.group(1), found.group(2), found.group(3) or ""
    exponent = int(found.group(4))
    if exponent < -6 or exponent >= 10:
        return f"{sign}{head}{'.' + tail if tail else ''}e{exponent:+d}"
    digits = head + tail
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    whole, fraction = digits[: exponent + 1].ljust(exponent + 1, "0"), digits[exponent + 1 :]
    return f"{sign}{whole}.{fraction}" if fraction else sign + whole


def round_significant(values: np.ndarray) -> np.ndarray:
    """float64 values whose shortest text is :func:`significant_text` of ``values``.

    Vectorised: the mantissa ``m = rint(v * 10**k)`` and ``m / 10**k`` are exact or correctly
    rounded while ``10**k`` is an exact double (|k| <= 22) and no product lands near a tie; the
    few values outside that (near-ties, extremes, non-finite) are rounded by ``%.9g`` itself.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    out = v.copy()  # zeros (and their sign) stay as they are
    magnitude = np.abs(v)
    usable = np.isfinite(v) & (magnitude > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.where(usable, magnitude, 1.0)))
        places = (SIGNIFICANT_DIGITS - 1) - exponent
        usable &= np.abs(places) <= 22
        power = 10.0 ** np.abs(np.where(usable, places, 0.0))
        scaled = np.where(places >= 0, v * power, v / power)
        mantissa = np.rint(scaled)
        exact = (
            usable
            & (np.abs(np.abs(scaled - mantissa) - 0.5) > 1e-6)
            & (np.abs(mantissa) >= 10.0 ** (SIGNIFICANT_DIGITS - 1))
            & (np.abs(mantissa) < 10.0**SIGNIFICANT_DIGITS)
        )
        out[exact] = np.where(places >= 0, mantissa / power, mantissa * power)[exact]
    rest = np.flatnonzero(~exact & (v != 0))
    if len(rest):
        out[rest] = [float(f"{x:.9g}") for x in v[rest].tolist()]
    return out.reshape(np.shape(values))


def significant_texts(values: np.ndarray) -> list[str]:
    """:func:`significant_text` of every value (flattened), in bulk: ~10x faster.

    msgspec writes the shortest text of each :func:`round_significant` value in C, which is
    Arrow's text except for whole numbers (``1.0``: the ``.0`` is cut), 1e-6 <= |x| < 1e-5
    (msgspec switches to an exponent sooner), |x| >= 1e10, float64 subnormals (which nine
    digits do not round-trip) and non-finite values; the last four are rare and written one
    by one.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not len(flat):
        return []
    rounded = round_significant(flat)
    texts = msgspec.json.encode(rounded.tolist()).decode()[1:-1].split(",")
    magnitude = np.abs(rounded)
    with np.errstate(invalid="ignore"):
        odd = ~np.isfinite(rounded) | ((magnitude >= 1e-6) & (magnitude < 1e-5))
        odd |= (magnitude >= 1e10) | ((magnitude < 1e-300) & (magnitude > 0))  # subnormal
        whole = ~odd & (rounded == np.trunc(rounded))
    for i in np.flatnonzero(whole).tolist():
        texts[i] = texts[i].removesuffix(".0")
    for i in np.flatnonzero(odd).tolist():
        texts[i] = significant_text(float(flat[i]))
    return texts


class CsvEncoder(Encoder):
    """``row[,<id>],label,probability_<class>...``; probabilities to 9 significant digits.

    Nine significant digits always read back to the same float32 (:func:`significant_text`).
    Where pyarrow is installed a chunk is written by Arrow's C++ CSV writer, off the GIL, from
    :func:`round_significant` values; otherwise (or when an id needs quoting) rows are
    formatted with one ``%``-template per row over column lists. Both give the same bytes.
    """

    def __init__(
        self,
        sink: Writable,
        *,
        id_column: str | None,
        classes: Sequence[str | int],
        class_names: Sequence[str],
        engine: str = "auto",
        arrow: ArrowCsv | None = None,
    ) -> None:
        """``engine``: ``auto`` (Arrow's writer where pyarrow is installed), ``arrow`` or
        ``numpy``; ``arrow`` hands over an :class:`ArrowCsv` already set up (it wins)."""
        super().__init__(sink, id_column=id_column, classes=classes, class_names=class_names)
        header = ["row", *([id_column] if id_column is not None else []), "label"]
        header += [f"probability_{name}" for name in self.class_names]
        self._header = (",".join(csv_field(h) for h in header) + "\n").encode()
        label_texts = [csv_field(str(c)) for c in self.classes]
        self._labels = np.array(label_texts, dtype=object)
        self._template = (
            "%d" + (",%s" if id_column is not None else "") + ",%s" * (1 + len(self.classes))
        )
        self._arrow = arrow if arrow is not None else ArrowCsv.find(engine)
        self._label_dictionary = None if self._arrow is None else self._arrow.strings(label_texts)
        if self._arrow is not None and any(
            t != str(c) for t, c in zip(label_texts, self.classes, strict=True)
        ):
            self._arrow = None  # a label needs quoting: Arrow would quote every string
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self._emit(self._header)
            self._started = True

    def _write(self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> None:
        self._start()
        n = len(batch)
        if n == 0:
            return
        if self._arrow is not None:
            data = self._write_arrow(batch, probabilities, labels)
            if data is not None:
                self._emit(data)
                return
        columns: list[list[Any]] = [batch.rows.tolist()]
        if self.id_column is not None:
            columns.append(csv_ids(batch.ids, n))
        columns.append(self._labels[labels].tolist())
        texts = significant_texts(np.asarray(probabilities).T)
        columns.extend(texts[j : j + n] for j in range(0, len(texts), n))
        text = "\n".join(map(self._template.__mod__, zip(*columns, strict=True)))
        self._emit((text + "\n").encode())

    def _write_arrow(
        self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray
    ) -> bytes | None:
        """The chunk as CSV bytes from Arrow's writer, or ``None`` if an id needs quoting."""
        arrow = self._arrow
        assert arrow is not None
        pa = arrow.pa
        columns: dict[str, Any] = {"row": arrow.numbers(batch.rows, pa.int64())}
        if self.id_column is not None:
            if isinstance(batch.ids, ArrowTexts):
                ids = batch.ids.array
            else:
                ids = arrow.strings(batch.ids if batch.ids is not None else [None] * len(batch))
            if ids is None:
                return None  # not all text: str() of other types is left to the Python path
            columns["id"] = ids
        columns["label"] = pa.DictionaryArray.from_arrays(
            arrow.numbers(labels, pa.int32()), self._label_dictionary
        )
        rounded = round_significant(np.asarray(probabilities))
        for j in range(rounded.shape[1]):
            columns[f"p{j}"] = arrow.numbers(rounded[:, j], pa.float64())
        return arrow.write(columns)

    def _close(self) -> None:
        self._start()
