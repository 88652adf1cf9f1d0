"""The native API's request and response bodies: they validate requests and, through
pydantic's JSON Schema, make the OpenAPI document (one definition, so the two cannot drift)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from cutout.service import NAME_MAX

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX, description="1-100 characters.")]
Binary = Annotated[
    bytes, WithJsonSchema({"type": "string", "format": "binary", "description": "The photo."})
]


class OutputChoices(BaseModel):
    """The same output options as ``cutout remove``."""

    format: Literal["png", "webp", "jpeg"] = Field("png", description="Output format.")
    background: str | None = Field(
        None,
        max_length=64,
        description="Flatten onto a colour: a name, #rrggbb, #rrggbbaa or r,g,b.",
    )
    crop: bool = Field(False, description="Crop to the subject.")
    margin: int = Field(0, ge=0, le=10_000, description="Pixels kept around the subject.")
    mask_only: bool = Field(False, description="Return the alpha mask as a grayscale image.")
    quality: Literal["fast", "balanced", "best"] | None = Field(
        None,
        description="Quality mode: `fast` (one model), `balanced` (two models fused) or "
        "`best` (slower; better hair and fur). Default: the server's (`CUTOUT_QUALITY`).",
    )


class ImageUpload(OutputChoices):
    """``multipart/form-data``: the photo as a file."""

    name: Name
    image: Binary


class ImageFromJson(OutputChoices):
    """JSON: the photo in base64, or a URL the server downloads (public addresses only)."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["image_b64"]}, {"required": ["image_url"]}]}
    )

    name: Name
    image_b64: str | None = Field(None, min_length=1, description="The photo, base64.")
    image_url: str | None = Field(
        None, min_length=1, max_length=2048, description="http(s) URL of the photo."
    )


class Rename(BaseModel):
    name: Name


class Page(BaseModel):
    page: int = Field(1, ge=1, le=1_000_000, description="1-based page number.")
    per_page: int = Field(20, ge=1, le=100, description="Items per page.")


class ImageInfo(BaseModel):
    media_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str


class Links(BaseModel):
    self: str
    original: str
    processed: str


class Image(BaseModel):
    id: str
    name: str
    created_on: str = Field(description='"YYYY-MM-DD HH:MM:SS", UTC.')
    engine: str
    model: str
    confidence: float | None = Field(
        description="How far to trust the cut-out, 0-1; null when the engine cannot score it."
    )
    needs_review: bool | None = Field(
        description="True when the confidence is below the review threshold: check this one."
    )
    original: ImageInfo | None
    processed: ImageInfo | None
    links: Links


class ImagePage(BaseModel):
    items: list[Image]
    page: int
    per_page: int
    total: int


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code, e.g. invalid_image or limit_reached.")
    message: str = Field(description="What went wrong and how to fix it.")


# -- batch jobs ------------------------------------------------------------------------------

Url = Annotated[str, Field(min_length=1, max_length=2048, description="http(s) URL of a photo.")]


class JobFromJson(OutputChoices):
    """JSON: photos by URL (the server downloads them, public addresses only)."""

    urls: list[Url] = Field(min_length=1, description="The photos' URLs.")
    webhook_url: str | None = Field(
        None, max_length=2048, description="POSTed the job's JSON, signed, when it ends."
    )


class JobUpload(OutputChoices):
    """``multipart/form-data``: photos as repeated ``images`` files, a ``.zip`` as
    ``archive``, and/or repeated ``urls`` fields."""

    images: list[Binary] = Field(default_factory=list, description="The photos.")
    archive: Binary | None = Field(None, description="A .zip of photos.")
    urls: list[Url] = Field(default_factory=list)
    webhook_url: str | None = Field(None, max_length=2048)


class JobLinks(BaseModel):
    self: str
    results: str = Field(description="A zip of the finished items' cut-outs, streamed.")


class Job(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "cancelled"]
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    options: dict[str, object]
    webhook_url: str | None
    created_at: str = Field(description="ISO 8601, UTC.")
    started_at: str | None
    finished_at: str | None
    eta_seconds: float | None = Field(description="Time left at the pace so far (null: unknown).")
    links: JobLinks


class JobItem(BaseModel):
    index: int
    name: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    attempts: int
    image_id: str | None = Field(description="The record made (done items).")
    error: str | None = Field(description="Why it failed (failed items).")
    error_code: str | None
    seconds: float | None = Field(description="Its time on the server (finished items).")


class JobDetail(Job):
    items: list[JobItem]
    page: int
    per_page: int


class JobList(BaseModel):
    items: list[Job]


class ItemPage(BaseModel):
    page: int = Field(1, ge=1, le=1_000_000, description="1-based page of items.")
    per_page: int = Field(100, ge=1, le=1000, description="Items per page.")
