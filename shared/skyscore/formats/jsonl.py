"""JSON Lines and JSON arrays of records, in and out, with msgspec.

Records are validated with exactly the rules of :meth:`InputSchema.check_record` (HTTP
instances, queue messages and files accept the same inputs). The fast path decodes a whole
block into typed structs in C (``msgspec.defstruct`` built from the schema), which accepts a
subset of what ``check_record`` accepts; anything it refuses is decoded again untyped and
judged by ``check_record`` itself, so results are identical, only slower for bad rows.

Row numbers: JSON Lines counts non-blank lines (blank lines are skipped, not rows); a JSON
array counts elements (index + 1). A line that is not JSON is a row error ("invalid JSON: ...",
as is a number msgspec cannot hold, such as ``1e400``).

A JSON array is streamed: each block is cut at the last ``},{`` between top-level elements
(a cheap guess that msgspec confirms by decoding the prefix; nested objects or odd strings fall
back to an exact tokeniser), so memory stays at about one block. Unlike JSON Lines, an array
cannot resume after a syntax error: malformed JSON is a file-level ``InvalidInput``, and a
single element larger than ``MAX_ELEMENT_BYTES`` is refused.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import msgspec
import numpy as np

from skyscore.errors import FormatMismatch, InvalidInput
from skyscore.formats.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    Encoder,
    FileFormat,
    Readable,
    Writable,
    concat_batches,
    iter_line_chunks,
)
from skyscore.model.schema import (
    FLOAT32_MAX,
    MISSING_CATEGORY,
    Batch,
    InputSchema,
    RowError,
    numeric_problem,
)

JSON_BLOCK_SIZE = 8 << 20
MAX_ELEMENT_BYTES = 64 << 20
_BOUNDARY_TRIES = 3
_JSON_WS = b" \t\r\n"
# a string (or one cut off by the end of the buffer), a bracket or a comma
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{},]', re.DOTALL)
_BOM = b"\xef\xbb\xbf"

Getter = Callable[[Any], tuple[Any, ...]]
# msgspec's C decoders raise ``RecursionError`` (not ``DecodeError``) past about ten thousand
# levels of nesting: no record needs that, so such a value is "invalid JSON" like any other
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
TOO_DEEP = "nested too deeply to decode (no record needs thousands of levels)"


def _getter(names: Sequence[str]) -> Getter:
    """A C-level attribute getter that always returns a tuple."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        single = operator.attrgetter(names[0])
        return lambda obj: (single(obj),)
    many: Getter = operator.attrgetter(*names)
    return many


def _invalid_json(row: int, exc: Exception) -> RowError:
    reason = TOO_DEEP if isinstance(exc, RecursionError) else str(exc)
    return RowError(row, None, f"invalid JSON: {reason}")


class _BadElement:
    """An array element msgspec cannot decode although the array is well formed: nested
    too deeply, or a number no float holds (``1e400``). A row error, as in JSON Lines."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _value_error(exc: Exception) -> bool:
    """Whether a decode error is about one value of well-formed JSON (not its syntax)."""
    return isinstance(exc, RecursionError) or (
        isinstance(exc, msgspec.DecodeError) and "out of range" in str(exc)
    )


class RecordCodec:
    """Typed decoders for one schema plus the assembly of structs into batches."""

    def __init__(self, schema: InputSchema) -> None:
        self.schema = schema
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        numeric_attrs = [f"n{i}" for i in range(len(schema.numeric))]
        categorical_attrs = [f"c{i}" for i in range(len(schema.categorical))]
        for attr, name in zip(numeric_attrs, schema.numeric, strict=True):
            fields.append((attr, int | float | None))
            rename[attr] = name
        for attr, name in zip(categorical_attrs, schema.categorical, strict=True):
            fields.append((attr, str | int | None))
            rename[attr] = name
        id_attr: str | None = None
        if schema.id_column is not None:
            if schema.id_column in schema.numeric:
                id_attr = numeric_attrs[schema.numeric.index(schema.id_column)]
            elif schema.id_column in schema.categorical:
                id_attr = categorical_attrs[schema.categorical.index(schema.id_column)]
            else:
                id_attr = "ident"
                fields.append(("ident", Any, None))
                rename["ident"] = schema.id_column
        self.record_type: type[msgspec.Struct] = msgspec.defstruct(
            "Record", fields, rename=rename, forbid_unknown_fields=schema.strict
        )
        self.one = msgspec.json.Decoder(self.record_type)
        self.many = msgspec.json.Decoder(list[self.record_type])  # type: ignore[name-defined]
        self.untyped = msgspec.json.Decoder()
        self.numeric_of = _getter(numeric_attrs)
        self.categorical_of = _getter(categorical_attrs)
        self.id_of: Callable[[Any], Any] | None = (
            None if id_attr is None else operator.attrgetter(id_attr)
        )

    def assemble(self, structs: list[Any], rows: list[int]) -> tuple[Batch, list[RowError]]:
        """A batch from typed structs; rows with values beyond float32 become errors."""
        schema = self.schema
        n, k, m = len(structs), len(schema.numeric), len(schema.categorical)
        errors: list[RowError] = []
        try:
            numeric = np.fromiter(
                itertools.chain.from_iterable(map(self.numeric_of, structs)),
                dtype=np.float64,
                count=n * k,
            ).reshape(n, k)
            risky = (np.abs(numeric) >= FLOAT32_MAX).any(axis=1)  # exact check for these rows
        except OverflowError:  # an integer beyond float64: check every row exactly
            numeric = np.zeros((n, k), dtype=np.float64)
            risky = np.ones(n, dtype=bool)
        keep = np.ones(n, dtype=bool)
        if risky.any():
            for i in np.flatnonzero(risky).tolist():
                values = self.numeric_of(structs[i])
                for name, value in zip(schema.numeric, values, strict=True):
                    reason = numeric_problem(value)
                    if reason:
                        errors.append(RowError(rows[i], name, reason))
                        keep[i] = False
                        break
                else:
                    numeric[i] = [np.nan if v is None else float(v) for v in values]
        if not keep.all():
            structs = [s for s, ok in zip(structs, keep.tolist(), strict=True) if ok]
            rows = [r for r, ok in zip(rows, keep.tolist(), strict=True) if ok]
            numeric = numeric[keep]
            n = len(structs)
        categorical = np.empty((n, m), dtype=object)
        if n and m:
            categorical[:] = list(map(self.categorical_of, structs))
            flat = categorical.reshape(-1)
            if set(map(type, flat.tolist())) != {str}:  # null or an integer category
                flat[:] = [
                    v if type(v) is str else (MISSING_CATEGORY if v is None else str(v))
                    for v in flat.tolist()
                ]
        ids = None if schema.id_column is None else [None] * n
        if self.id_of is not None:
            ids = list(map(self.id_of, structs))
        batch = Batch(
            np.asarray(rows, dtype=np.int64), numeric.astype(np.float32), categorical, ids
        )
        return batch, errors


class _Pending:
    """Rows decoded so far for the next chunk, kept apart by how they were decoded."""

    def __init__(self, codec: RecordCodec) -> None:
        self.codec = codec
        self.structs: list[Any] = []
        self.struct_rows: list[int] = []
        self.records: list[Any] = []  # accepted by check_record but not by the typed decoder
        self.record_rows: list[int] = []
        self.errors: list[RowError] = []
        self.count = 0

    def add_structs(self, structs: list[Any], first_row: int) -> None:
        self.structs.extend(structs)
        self.struct_rows.extend(range(first_row, first_row + len(structs)))
        self.count += len(structs)

    def add_struct(self, struct: Any, row: int) -> None:
        self.structs.append(struct)
        self.struct_rows.append(row)
        self.count += 1

    def add_record(self, record: Any, row: int) -> None:
        """Judge an untyped record with ``check_record`` (the authority), then keep it."""
        self.count += 1
        problem = self.codec.schema.check_record(record)
        if problem is not None:
            self.errors.append(RowError(row, problem.column, problem.reason))
            return
        try:
            struct = msgspec.convert(record, self.codec.record_type)
        except msgspec.ValidationError:
            self.records.append(record)
            self.record_rows.append(row)
            return
        self.structs.append(struct)
        self.struct_rows.append(row)

    def add_error(self, error: RowError) -> None:
        self.errors.append(error)
        self.count += 1

    def flush(self) -> Chunk:
        codec = self.codec
        batch, errors = codec.assemble(self.structs, self.struct_rows)
        errors += self.errors
        if self.records:
            extra, more = codec.schema.records_to_batch(self.records)
            extra.rows = np.asarray(self.record_rows, dtype=np.int64)[extra.rows - 1]
            errors += [RowError(self.record_rows[e.row - 1], e.column, e.reason) for e in more]
            batch = concat_batches(codec.schema, [batch, extra])
        errors.sort(key=lambda e: e.row)
        self.structs, self.struct_rows, self.records, self.record_rows = [], [], [], []
        self.errors = []
        self.count = 0
        return batch, errors


def _decode_line(codec: RecordCodec, pending: _Pending, line: bytes, row: int) -> None:
    try:
        pending.add_struct(codec.one.decode(line), row)
        return
    except msgspec.ValidationError:
        pass
    except _DECODE_ERRORS as exc:
        pending.add_error(_invalid_json(row, exc))
        return
    try:
        record = codec.untyped.decode(line)
    except _DECODE_ERRORS as exc:
        pending.add_error(_invalid_json(row, exc))
        return
    pending.add_record(record, row)


class JsonLinesFormat(FileFormat):
    """One JSON object per line (``.jsonl``, ``.ndjson``)."""

    name = "jsonl"
    label = "JSON Lines"
    extensions = (".jsonl", ".ndjson")

    def __init__(self, *, block_size: int | None = None) -> None:
        self.block_size = block_size

    def decode(
        self, source: Readable, schema: InputSchema, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Chunks of at most ``chunk_rows`` lines; malformed lines are "invalid JSON" errors."""
        codec = RecordCodec(schema)
        pending = _Pending(codec)
        kwargs = {} if self.block_size is None else {"block_size": self.block_size}
        next_row = 1
        first = True
        for chunk in iter_line_chunks(source, chunk_rows, **kwargs):
            data = chunk.removeprefix(_BOM) if first else chunk
            first = False
            try:
                structs = codec.one.decode_lines(data)
            except _DECODE_ERRORS:
                structs = None
            if structs is not None and len(structs) == data.count(b"\n") + 1:
                pending.add_structs(structs, next_row)
                next_row += len(structs)
            else:  # blank lines or bad lines in this chunk: go line by line
                for line in data.split(b"\n"):
                    if not line.strip(_JSON_WS):
                        continue
                    _decode_line(codec, pending, line, next_row)
                    next_row += 1
            if pending.count:
                yield pending.flush()

    def encoder_type(self) -> type[JsonLinesEncoder]:
        """Writes JSON Lines."""
        return JsonLinesEncoder

    def sniff(self, head: bytes) -> str | None:
        """The first non-blank character of JSON Lines records is ``{``."""
        start = head.removeprefix(_BOM).lstrip(_JSON_WS)[:1]
        if not start or start == b"{":
            return None
        if start == b"[":
            return "it starts with '[', like a JSON array (name it .json)"
        return f"a record line must start with '{{', not {start.decode(errors='replace')!r}"


# ---------------------------------------------------------------------------- JSON arrays
def _skip_ws_back(buf: bytes, i: int) -> int:
    while i >= 0 and buf[i] in _JSON_WS:
        i -= 1
    return i


def _skip_ws(buf: bytes, i: int) -> int:
    while i < len(buf) and buf[i] in _JSON_WS:
        i += 1
    return i


def _candidate_cuts(buf: bytes) -> Iterator[int]:
    """Commas that look like ``},{`` between elements, last first (cheap, may be wrong)."""
    end = len(buf)
    while True:
        close = buf.rfind(b"}", 0, end)
        if close < 0:
            return
        comma = _skip_ws(buf, close + 1)
        if comma < len(buf) and buf[comma] == ord(","):
            after = _skip_ws(buf, comma + 1)
            if after < len(buf) and buf[after] == ord("{"):
                yield comma
        end = close


def _exact_cuts(buf: bytes) -> list[int]:
    """Commas at depth 0 (between top-level elements), found by tokenising; slow but exact."""
    depth = 0
    cuts: list[int] = []
    for match in _TOKENS.finditer(buf):
        token = match.group()
        first = token[0]
        if first in b"[{":
            depth += 1
        elif first in b"]}":
            depth -= 1
        elif first == ord(",") and depth == 0:
            cuts.append(match.start())
    return cuts


def _split_elements(codec: RecordCodec, body: bytes) -> tuple[bool, list[Any]] | None:
    """The untyped elements of the array ``body``, decoded one by one, an element with a value
    msgspec cannot hold standing as a :class:`_BadElement` (a row error, so the other rows are
    still scored); ``None`` if ``body`` is not a well-formed JSON array."""
    inner = body.rstrip(_JSON_WS)
    if inner[:1] != b"[" or inner[-1:] != b"]":
        return None
    inner = inner[1:-1]
    if not inner.strip(_JSON_WS):
        return False, []
    elements: list[Any] = []
    start = 0
    for cut in [*_exact_cuts(inner), len(inner)]:
        piece = inner[start:cut]
        start = cut + 1
        try:
            elements.append(codec.untyped.decode(piece))
        except _DECODE_ERRORS as exc:
            if not _value_error(exc):
                return None
            elements.append(_BadElement(_invalid_json(0, exc).reason))
    return False, elements


def _raise_invalid(codec: RecordCodec, body: bytes, consumed: int) -> NoReturn:
    """Raise the file-level error for malformed JSON in ``body`` (which starts at ``consumed``)."""
    try:
        codec.untyped.decode(body)
    except RecursionError:
        raise InvalidInput(
            f"invalid JSON in the array after byte {consumed:,} of the file: {TOO_DEEP}"
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"invalid JSON in the array after byte {consumed:,} of the file: {exc}"
        ) from exc
    raise InvalidInput(f"invalid JSON in the array after byte {consumed:,} of the file")


class JsonArrayFormat(FileFormat):
    """A top-level JSON array of record objects (``.json``), streamed."""

    name = "json"
    label = "JSON"
    extensions = (".json",)

    def __init__(self, *, block_size: int = JSON_BLOCK_SIZE) -> None:
        self.block_size = block_size

    @staticmethod
    def _decode_elements(codec: RecordCodec, body: bytes) -> tuple[bool, list[Any]] | None:
        """``(typed, elements)`` of ``[`` + body + ``]``, or ``None`` if that is not JSON."""
        try:
            return True, codec.many.decode(body)
        except msgspec.ValidationError:
            pass
        except _DECODE_ERRORS as exc:
            return _split_elements(codec, body) if _value_error(exc) else None
        try:
            elements = codec.untyped.decode(body)
        except _DECODE_ERRORS as exc:
            return _split_elements(codec, body) if _value_error(exc) else None
        return False, elements

    def _cut(
        self, codec: RecordCodec, buf: bytes, consumed: int
    ) -> tuple[int, tuple[bool, list[Any]]] | None:
        """The last element boundary in ``buf`` and the elements before it.

        ``None`` when ``buf`` holds no complete element yet; ``InvalidInput`` when the JSON
        before the first boundary is malformed.
        """
        for tries, cut in enumerate(_candidate_cuts(buf), start=1):
            decoded = self._decode_elements(codec, b"[" + buf[:cut] + b"]")
            if decoded is not None:
                return cut, decoded
            if tries >= _BOUNDARY_TRIES:
                break
        cuts = _exact_cuts(buf)  # the cheap guesses failed: nested objects or odd strings
        for cut in reversed(cuts):
            decoded = self._decode_elements(codec, b"[" + buf[:cut] + b"]")
            if decoded is not None:
                return cut, decoded
        if cuts:
            _raise_invalid(codec, b"[" + buf[: cuts[0]] + b"]", consumed)
        return None

    def decode(
        self, source: Readable, schema: InputSchema, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Chunks of at most ``chunk_rows`` elements; malformed JSON is a file-level error."""
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        codec = RecordCodec(schema)
        pending = _Pending(codec)
        buf = b""
        started = False
        consumed = 0  # bytes of the file before ``buf``, for messages
        next_row = 1
        eof = False
        while not eof:
            block = source.read(self.block_size)
            eof = not block
            buf = buf + block if buf else block
            if not started:
                body = buf.removeprefix(_BOM).lstrip(_JSON_WS)
                if not body:
                    if eof:
                        raise FormatMismatch("the JSON file is empty; expected an array '[...]'")
                    continue
                if body[:1] != b"[":
                    raise FormatMismatch(
                        "a .json file must hold a top-level array of objects '[{...}, ...]' "
                        "(use .jsonl for one object per line)"
                    )
                consumed += len(buf) - len(body) + 1
                buf = body[1:]
                started = True
            if eof:
                decoded = self._decode_elements(codec, b"[" + buf)
                if decoded is None:
                    _raise_invalid(codec, b"[" + buf, consumed)
                buf = b""
            else:
                found = self._cut(codec, buf, consumed)
                if found is None:
                    if len(buf) > MAX_ELEMENT_BYTES + self.block_size:
                        raise InvalidInput(
                            f"no end of a JSON array element within {len(buf):,} bytes after "
                            f"byte {consumed:,}; elements must be under {MAX_ELEMENT_BYTES:,} "
                            "bytes (or the JSON is invalid)"
                        )
                    continue
                cut, decoded = found
                consumed += cut + 1
                buf = buf[cut + 1 :]
            typed, elements = decoded
            start = 0
            while start < len(elements):
                room = chunk_rows - pending.count
                part = elements[start : start + room]
                if typed:
                    pending.add_structs(part, next_row)
                else:
                    for offset, element in enumerate(part):
                        if isinstance(element, _BadElement):
                            pending.add_error(RowError(next_row + offset, None, element.reason))
                        else:
                            pending.add_record(element, next_row + offset)
                next_row += len(part)
                start += len(part)
                if pending.count >= chunk_rows:
                    yield pending.flush()
        if pending.count:
            yield pending.flush()

    def encoder_type(self) -> type[JsonArrayEncoder]:
        """Writes JSON array."""
        return JsonArrayEncoder

    def sniff(self, head: bytes) -> str | None:
        """A JSON array file starts with ``[``."""
        start = head.removeprefix(_BOM).lstrip(_JSON_WS)[:1]
        if start == b"[":
            return None
        if not start:
            return "it is empty; expected a JSON array '[...]'"
        if start == b"{":
            return (
                "it starts with '{', not '['; a .json file must hold an array of objects "
                "(use .jsonl for one object per line)"
            )
        return f"it starts with {start.decode(errors='replace')!r}; expected a JSON array '['"


# ---------------------------------------------------------------------------- encoders
def _id_encoder() -> msgspec.json.Encoder:
    return msgspec.json.Encoder(enc_hook=str)


class _JsonRecordEncoder(Encoder):
    """Prediction objects ``{"row", <id>, "label", "probabilities": {class: p}}`` as bytes.

    Each object comes from one bytes ``%``-template (C-level per row); probabilities are
    written with 9 significant digits (float32 round-trip) and non-finite ones as ``null``.
    """

    def __init__(
        self,
        sink: Writable,
        *,
        id_column: str | None,
        classes: Sequence[str | int],
        class_names: Sequence[str],
    ) -> None:
        super().__init__(sink, id_column=id_column, classes=classes, class_names=class_names)
        encode = msgspec.json.encode
        self._id_encode = _id_encoder().encode
        self._labels = np.array([encode(c) for c in self.classes], dtype=object)
        parts = [b'{"row":%d']
        if id_column is not None:
            parts.append(b"," + encode(id_column).replace(b"%", b"%%") + b":%s")
        parts.append(b',"label":%s,"probabilities":{')
        parts.append(
            b",".join(encode(name).replace(b"%", b"%%") + b":%.9g" for name in self.class_names)
        )
        parts.append(b"}}")
        self._template = b"".join(parts)

    def _records(
        self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray, sep: bytes
    ) -> bytes:
        """The batch's objects joined by ``sep``."""
        n = len(batch)
        if not np.isfinite(probabilities).all():
            return sep.join(self._slow_records(batch, probabilities, labels))
        columns: list[list[Any]] = [batch.rows.tolist()]
        if self.id_column is not None:
            ids = batch.ids if batch.ids is not None else [None] * n
            columns.append(list(map(self._id_encode, ids)))
        columns.append(self._labels[labels].tolist())
        columns.extend(np.asarray(probabilities).T.tolist())
        return sep.join(map(self._template.__mod__, zip(*columns, strict=True)))

    def _slow_records(
        self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray
    ) -> list[bytes]:
        out = []
        encode = msgspec.json.Encoder(enc_hook=str).encode
        ids = batch.ids if batch.ids is not None else [None] * len(batch)
        for i, (row, label, probs) in enumerate(
            zip(batch.rows.tolist(), labels.tolist(), probabilities.tolist(), strict=True)
        ):
            record: dict[str, Any] = {"row": row}
            if self.id_column is not None:
                record[self.id_column] = ids[i]
            record["label"] = self.classes[label]
            record["probabilities"] = {
                name: (float(f"{p:.9g}") if np.isfinite(p) else None)
                for name, p in zip(self.class_names, probs, strict=True)
            }
            out.append(encode(record))
        return out


class JsonLinesEncoder(_JsonRecordEncoder):
    """One prediction object per line."""

    def _write(self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> None:
        if len(batch):
            self._emit(self._records(batch, probabilities, labels, b"\n") + b"\n")

    def _close(self) -> None:
        pass


class JsonArrayEncoder(_JsonRecordEncoder):
    """A JSON array of prediction objects, one per line, written incrementally."""

    def _write(self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> None:
        if len(batch):
            prefix = b",\n" if self.rows_written else b"[\n"
            self._emit(prefix + self._records(batch, probabilities, labels, b",\n"))

    def _close(self) -> None:
        self._emit(b"\n]\n" if self.rows_written else b"[]\n")


JSONL = JsonLinesFormat()
JSON = JsonArrayFormat()
