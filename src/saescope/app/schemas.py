"""Validated request bodies of the app's JSON API (pydantic: NaN, infinities and oversized values are refused).

No ``from __future__ import annotations``: FastAPI must see these annotations as classes.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Op = Literal["add", "set", "ablate", "scale", "cap"]


class Edit(BaseModel):
    """One feature edit of a steering request."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    feature: int = Field(ge=0, le=10**7)
    op: Op = "add"
    value: float = 0.0


class SteerBody(BaseModel):
    """Steered vs plain generation, same seed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    run: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")
    prompt: str = Field(min_length=1)
    edits: list[Edit] = Field(min_length=1)
    max_new_tokens: int = Field(default=32, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    chat: bool = False


NodeId = Annotated[str, Field(max_length=40, pattern=r"^[0-9]+_[0-9]+_[0-9]+$")]


class GraphInterveneBody(BaseModel):
    """Scale feature nodes of an attribution graph (circuit-tracer ids ``layer_feature_position``); 0 ablates."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    nodes: list[NodeId] = Field(min_length=1, max_length=64)
    scale: float = 0.0
