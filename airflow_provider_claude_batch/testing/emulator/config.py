"""The emulator's settings, :class:`EmulatorConfig`, and where they are read from (file, environment, overrides)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..faults import FaultRule, OutcomeRule

__all__ = ["ARCHIVE_DAYS", "DAY", "ENV_PREFIX", "EmulatorConfig", "as_config", "load_config"]

DAY = 86_400.0
ARCHIVE_DAYS = 29
ENV_PREFIX = "CLAUDE_EMULATOR_"


class EmulatorConfig(BaseModel):
    """Every knob of the emulator. Immutable: updates build a new validated instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    processing_seconds: float = Field(2.0, ge=0, description="Real seconds from create to end.")
    cancel_seconds: float = Field(0.5, ge=0, description="Real seconds a cancel stays 'canceling'.")
    time_scale: float = Field(1.0, gt=0, description="Divides the 24 h expiry and 29 d archive windows.")
    api_key: str | None = Field(None, description="If set, the only accepted key; else any key.")
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1)
    max_messages_body_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_requests_per_batch: int = Field(100_000, ge=1)
    outcomes: tuple[OutcomeRule, ...] = ()
    faults: tuple[FaultRule, ...] = ()
    error_rate: float = Field(0.0, ge=0, le=1)
    expire_rate: float = Field(0.0, ge=0, le=1)
    seed: int | None = None
    expires_after_seconds: float | None = Field(None, gt=0, description="Override of 86400/time_scale.")
    archive_after_seconds: float | None = Field(None, gt=0, description="Override of 29 d/time_scale.")
    extra_models: tuple[str, ...] = Field(
        (), description="Model ids served besides the price table's and the SDK's (a model newer than both)."
    )
    # The fleet limits (see ..limits): all off by default.
    rate_limit_rpm: int | None = Field(
        None, ge=1, description="Calls allowed per rolling window across every batch endpoint; None: no limit."
    )
    rate_limit_window_seconds: float = Field(60.0, gt=0, description="The rolling window of rate_limit_rpm.")
    max_queued_requests: int | None = Field(
        None, ge=1, description="Most requests processing in unended batches; a create above it gets 429."
    )
    cache_hit_rate: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of batch requests that find a cached prefix that is there (best effort; per custom id, "
        "deterministic given the seed); a miss writes the prefix again.",
    )
    propagation_delay_seconds: float = Field(
        0.0, ge=0, description="Seconds after its create in which a batch answers 404 on retrieve and results."
    )

    @property
    def expiry_delta(self) -> float:
        """Seconds from creation to the 24-hour expiry, after time scaling."""
        return self.expires_after_seconds or DAY / self.time_scale

    @property
    def archive_delta(self) -> float:
        """Seconds from creation until results are archived (29 days, scaled)."""
        return self.archive_after_seconds or ARCHIVE_DAYS * DAY / self.time_scale

    def merged(self, partial: Mapping[str, Any]) -> EmulatorConfig:
        """A new config with ``partial`` applied on top (validated as a whole)."""
        return EmulatorConfig.model_validate({**self.model_dump(), **dict(partial)})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> EmulatorConfig:
        """Load a JSON config file (same keys as the model)."""
        return cls.model_validate(json.loads(Path(path).read_text()))

    @classmethod
    def env_overrides(cls, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Scalar settings from ``CLAUDE_EMULATOR_<FIELD>`` variables (e.g. ``..._PROCESSING_SECONDS``)."""
        environ = os.environ if environ is None else environ
        structured = {"outcomes", "faults", "extra_models"}  # lists: set them in a config file
        found: dict[str, Any] = {}
        for name in cls.model_fields:
            value = environ.get(ENV_PREFIX + name.upper())
            if name not in structured and value not in (None, ""):
                found[name] = value
        return found

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorConfig:
        """Defaults overridden by ``CLAUDE_EMULATOR_*`` variables."""
        return cls.model_validate(cls.env_overrides(environ))


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> EmulatorConfig:
    """Defaults < JSON file (``path`` or ``CLAUDE_EMULATOR_CONFIG``) < env variables < ``overrides``.

    ``overrides`` whose value is None are ignored, so CLI flags left unset do not clobber.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG") or None
    base = EmulatorConfig.from_file(path) if path else EmulatorConfig()
    explicit = {k: v for k, v in overrides.items() if v is not None}
    return base.merged({**EmulatorConfig.env_overrides(environ), **explicit})


def as_config(config: EmulatorConfig | Mapping[str, Any] | None) -> EmulatorConfig:
    if config is None:
        return EmulatorConfig()
    if isinstance(config, EmulatorConfig):
        return config
    return EmulatorConfig.model_validate(dict(config))
