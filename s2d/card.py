"""The model card: `card.json`, the contract between training (which writes it) and the service (which reads it).

Torch-free on purpose: the service validates cards with `ModelCard` (or with the JSON schema it generates,
`card_json_schema()`, also committed as `s2d/card.schema.json`). A card describes one model folder of the store: the
classes in output order, the clip the graph expects (T frames sampled uniformly over `window_seconds`, uint8 RGB
`[B, T, H, W, 3]`), every ONNX variant with its precision, where it is meant to run and its measured agreement with
fp32, and the provenance of the weights (source checkpoint sha256, licence, whether the model is a demo).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("card.schema.json")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# A variant file is a plain name inside the model folder: no directories, so a card can never point outside it.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.onnx$")
_SHA256 = r"^[0-9a-f]{64}$"

# What a model is, in words every place that shows a model repeats (the API, `s2d models list`, the page).
ModelFamily = Literal["s2d-video", "frame-baseline", "demo"]
FAMILY_DESCRIPTIONS: dict[str, str] = {
    "s2d-video": "S2D video model (temporal, landmark-aware)",
    "frame-baseline": "per-frame baseline: not S2D, no temporal model; frame probabilities averaged over the window",
    "demo": "synthetic demo model: knows the project's drawn faces only, not real people",
}


class CardError(ValueError):
    """A card that cannot be read or does not validate; the message names the file and the failing field."""

    def __init__(self, message: str, path: str | Path | None = None, field: str | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.field = field


class _Strict(BaseModel):
    # Unknown keys are refused: a misspelt field in a hand-edited card is an error, not a silently ignored value.
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The graph input: aligned face crops, uint8 RGB, batch x frames x height x width x channels."""

    name: str = "frames"
    dtype: Literal["uint8"] = "uint8"
    layout: Literal["BTHWC"] = "BTHWC"
    height: int = Field(224, ge=1)
    width: int = Field(224, ge=1)
    channels: Literal[3] = 3
    color: Literal["RGB"] = "RGB"
    content: str = "face crops aligned to the canonical 224x224 template (5-point similarity transform)"

    def shape(self, num_frames: int) -> list[int | None]:
        """[B, T, H, W, C] with the batch axis dynamic (None)."""
        return [None, num_frames, self.height, self.width, self.channels]


class VariantSpec(_Strict):
    """One ONNX file of the model folder: its numeric precision, where it runs, and how close it is to fp32."""

    file: str
    precision: Literal["fp32", "fp16", "bf16", "int8"]
    providers: list[str] = Field(min_length=1)  # ONNX Runtime execution providers this file is meant for
    top1_agreement: float | None = Field(None, ge=0, le=1)  # vs PyTorch fp32 (fp32) or vs the fp32 ONNX (others)
    max_abs_logit_diff: float | None = Field(None, ge=0)
    max_abs_prob_diff: float | None = Field(None, ge=0, le=1)  # of the softmax probabilities, vs the same reference
    agreement_clips: int | None = Field(None, ge=1)  # how many clips the two figures above were measured on
    size_bytes: int = Field(ge=0)
    sha256: str | None = Field(None, pattern=_SHA256)
    clips_per_s: float | None = Field(None, gt=0)  # batch 1, measured at export on `measured_on`; None = not timed
    measured_on: str | None = None  # the machine and provider the speed figure comes from
    # The CPU's instruction sets when `clips_per_s` was measured (s2d.machine.isa_summary): int8 speed depends on them
    measured_isa: str | None = None
    notes: str | None = None

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not _FILE_NAME.match(value):
            raise ValueError(f"must be a plain .onnx file name inside the model folder, got {value!r}")
        return value


class SourceCheckpoint(_Strict):
    path: str  # file name of the checkpoint the weights came from
    sha256: str | None = Field(None, pattern=_SHA256)  # None only for models exported from memory (never saved)


class ModelCard(_Strict):
    """Schema of `card.json` (schema_version 1)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    version: str = Field(min_length=1)
    description: str = ""
    classes: list[str] = Field(min_length=2)  # output order of logits / probs
    num_frames: int = Field(ge=1)  # T
    window_seconds: float = Field(gt=0)  # the T frames are sampled uniformly over this many seconds of video
    input: InputSpec = InputSpec()
    outputs: list[str] = ["logits", "probs", "features"]
    variants: dict[str, VariantSpec] = Field(min_length=1)
    family: ModelFamily  # what the model is; cards written before the field get it from `demo` (see _family)
    demo: bool = False  # True: trained on synthetic faces only, knows nothing of real faces
    licence: str = Field(min_length=1)  # licence of the weights (and of the data behind them, where it binds)
    source_checkpoint: SourceCheckpoint
    architecture: dict[str, Any]
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    created: str | None = None  # ISO 8601 time of export

    @model_validator(mode="before")
    @classmethod
    def _family(cls, data: Any) -> Any:
        # Cards from before the family field: S2D exports, demo or not.
        if isinstance(data, dict) and "family" not in data:
            data = {**data, "family": "demo" if data.get("demo") else "s2d-video"}
        return data

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or any(not c for c in value):
            raise ValueError(f"class names must be non-empty and unique, got {value}")
        return value

    @field_validator("outputs")
    @classmethod
    def _named_outputs(cls, value: list[str]) -> list[str]:
        missing = {"logits", "probs"} - set(value)
        if missing:
            raise ValueError(f"outputs must include {sorted(missing)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if "fp32" not in self.variants:
            raise ValueError("variants: the fp32 reference variant ('fp32') is required")
        files = [v.file for v in self.variants.values()]
        if len(set(files)) != len(files):
            raise ValueError(f"variants: two variants share a file: {files}")
        if self.demo != (self.family == "demo"):
            raise ValueError(f"family {self.family!r} contradicts demo={self.demo}: only the demo family is a demo")
        return self

    @property
    def family_description(self) -> str:
        return FAMILY_DESCRIPTIONS[self.family]

    @property
    def input_shape(self) -> list[int | None]:
        return self.input.shape(self.num_frames)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False)

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename), so a reader never sees half a card."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.to_json() + "\n")
        tmp.replace(path)
        return path


def _describe(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "<card>"
    others = error.error_count() - 1
    more = f" (and {others} more problem{'s' * (others > 1)})" if others else ""
    return field, f"{field}: {first['msg']}{more}"


def parse_card(data: dict[str, Any] | str | bytes, source: str | Path = "<card>") -> ModelCard:
    """Validate a card given as a dict or JSON text; errors name `source` and the failing field."""
    try:
        if isinstance(data, str | bytes):
            return ModelCard.model_validate_json(data)
        return ModelCard.model_validate(data)
    except ValidationError as err:
        field, message = _describe(err)
        raise CardError(f"invalid model card {source}: {message}", source, field) from None


def load_card(path: str | Path) -> ModelCard:
    """Read and validate `card.json` (or a model folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "card.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CardError(f"no model card at {path}", path) from None
    except OSError as err:
        raise CardError(f"cannot read model card {path}: {err}", path) from None
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise CardError(f"model card {path} is not JSON: {err}", path) from None
    return parse_card(text, path)


def card_json_schema() -> dict[str, Any]:
    """The JSON schema of card.json (what `s2d/card.schema.json` holds)."""
    schema = ModelCard.model_json_schema()
    schema["$id"] = "https://s2d.local/card.schema.json"
    schema["title"] = "S2D model card"
    return schema


def write_card_schema(path: str | Path = SCHEMA_PATH) -> Path:
    path = Path(path)
    path.write_text(json.dumps(card_json_schema(), indent=2) + "\n")
    return path


if __name__ == "__main__":  # regenerate the committed schema: python -m s2d.card
    print(write_card_schema())
