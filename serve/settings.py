"""Everything one server process is told: the bundle, where it listens, who may call it, its limits.

One frozen dataclass, as data, so the same settings start uvicorn (``python -m serve``) and every
Ray Serve replica (``serve/fleet.py``, from ``serve/fleet.yaml``).  Each limit has a reason.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

LOCALHOST = "127.0.0.1"


class SettingsError(ValueError):
    """A setting is out of range; raised before anything is loaded or bound."""


@dataclass(frozen=True)
class ServeSettings:
    bundle: str                                 # bundle folder written by `just export`
    host: str = LOCALHOST                       # localhost only unless told otherwise
    port: int = 8000
    api_key: str | None = None                  # with it, every request needs `Authorization: Bearer <key>`
    providers: tuple[str, ...] = ("cpu",)       # runtime.load's providers, in priority order
    model_name: str | None = None               # the id clients pass as `model`; default: the bundle folder's name
    # Answers run at once up to max_concurrent (each uses every intra-op thread of ONNX Runtime, so more
    # than 2 on a CPU only adds contention), wait in a queue up to max_queue, and beyond it get 503.
    max_concurrent: int = 2
    max_queue: int = 32
    max_body_bytes: int = 20 * 1024 * 1024      # a 12 MP JPEG is ~5 MB, as base64 ~7 MB
    max_image_pixels: int = 16 * 1024 * 1024    # checked on the header, before decoding (decompression bombs)
    max_messages: int = 8                       # the request's `messages` list
    max_text_chars: int = 4000                  # the question: runtime.prompt's own limit
    max_tokens_limit: int = 512                 # the largest `max_tokens` accepted
    default_max_tokens: int = 64                # when a request gives none
    image_folder: str | None = None             # local image paths allowed from this folder only; None: refused
    threads: int | None = None                  # ONNX Runtime intra-op threads per session (None: all cores)
    # Connections (serve/protocol.py; `just serve` only: under Ray its proxy holds the sockets).  A request's
    # headers must arrive within header_timeout_s and its body within body_timeout_s of them, else 408 and
    # the connection closes; both are totals, so a slow drip does not extend them.
    header_timeout_s: float = 10.0              # a LAN client sends its headers in milliseconds
    body_timeout_s: float = 60.0                # max_body_bytes (20 MB) at ~3 Mbit/s, a weak Wi-Fi link
    keep_alive_s: float = 15.0                  # idle between requests; OpenAI's client (httpx) drops its own after 5 s
    # Beyond this many open sockets a new one gets 503 and is closed: about 4x capacity (34 by default), room for
    # idle keep-alive clients and health probes, far below the usual 1024 open files of a process.
    max_connections: int = 128

    def __post_init__(self):
        for name in ("port", "max_concurrent", "max_queue", "max_body_bytes", "max_image_pixels", "max_messages",
                     "max_text_chars", "max_tokens_limit", "default_max_tokens"):
            value = getattr(self, name)
            low = 0 if name in ("max_queue", "port") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingsError(f"{name} must be an int >= {low}, got {value!r}")
        if self.port > 65535:
            raise SettingsError(f"port must be <= 65535, got {self.port}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise SettingsError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit "
                                f"({self.max_tokens_limit})")
        if self.api_key is not None and (not isinstance(self.api_key, str) or len(self.api_key) < 8
                                         or any(c.isspace() for c in self.api_key)):
            raise SettingsError("api_key must be a string of at least 8 characters without spaces")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise SettingsError(f"{name} must be a number of seconds in (0, 3600], got {value!r}")
        if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int) \
                or self.max_connections < 1:
            raise SettingsError(f"max_connections must be an int >= 1, got {self.max_connections!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise SettingsError(f"threads must be an int >= 1 or None (all cores), got {self.threads!r}")
        if self.model_name is not None and (not isinstance(self.model_name, str) or not self.model_name.strip()
                                            or len(self.model_name) > 200):
            raise SettingsError(f"model_name must be a non-empty string, got {self.model_name!r}")
        if not isinstance(self.bundle, str):
            raise SettingsError(f"bundle must be a folder path (a string), got {type(self.bundle).__name__}")
        if isinstance(self.providers, str):
            object.__setattr__(self, "providers", (self.providers,))
        object.__setattr__(self, "providers", tuple(self.providers))
        if not self.providers or not all(isinstance(p, str) for p in self.providers):
            raise SettingsError(f"providers must be a non-empty list of names (cpu, cuda, tensorrt), "
                                f"got {self.providers!r}")
        if self.image_folder is not None and not Path(self.image_folder).expanduser().is_dir():
            raise SettingsError(f"image_folder {self.image_folder!r} is not a folder")

    @property
    def served_name(self) -> str:
        return self.model_name or Path(self.bundle).expanduser().resolve().name

    @property
    def capacity(self) -> int:
        """Requests held at once (running + queued); one more gets 503."""
        return self.max_concurrent + self.max_queue

    def to_dict(self) -> dict:
        d = asdict(self)
        d["api_key"] = None if self.api_key is None else "***"
        return d


def is_localhost(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


