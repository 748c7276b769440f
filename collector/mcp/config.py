"""The `mcp:` config section: what MCP capture keeps of each event's payload (`McpConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PayloadMode = Literal["full", "truncate", "none"]


PAYLOAD_MODES: tuple[PayloadMode, ...] = ("full", "truncate", "none")


@dataclass(frozen=True)
class McpConfig:
    """What MCP capture keeps of a call's `args`/`result` and how large a body may be.

    `payloads`: "full" stores them as sent, "truncate" cuts each to `max_payload_chars`
    (flagging the cut), "none" stores neither (only their presence is lost, never the call).
    """

    payloads: PayloadMode = "truncate"
    max_payload_chars: int = 4096
    max_body_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.payloads not in PAYLOAD_MODES:
            raise ValueError(f"payloads must be one of {', '.join(PAYLOAD_MODES)}")
        if self.max_payload_chars < 1 or self.max_body_bytes < 1024:
            raise ValueError("max_payload_chars must be >= 1 and max_body_bytes >= 1024")
