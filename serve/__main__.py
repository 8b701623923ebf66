"""python -m serve BUNDLE [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--provider cpu] [...]

Loads the bundle first (a bad bundle or provider fails here, with its reason, before anything
listens), then serves it with uvicorn until Ctrl-C.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from runtime.errors import RuntimeInputError

from .settings import ServeSettings, SettingsError, is_localhost

API_KEY_ENV = "ADAPTVIS_API_KEY"


def parser() -> argparse.ArgumentParser:
    d = ServeSettings(bundle=".")
    p = argparse.ArgumentParser(prog="python -m serve", description="Serve a bundle over OpenAI's chat-completions "
                                "API (POST /v1/chat/completions, GET /v1/models, GET /health).")
    p.add_argument("bundle", help="bundle folder written by `just export`")
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"require 'Authorization: Bearer KEY' on every request (default: ${API_KEY_ENV}, if set)")
    p.add_argument("--provider", action="append", help="cpu (default), cuda or tensorrt; repeat for a priority list")
    p.add_argument("--model-name", help="the id clients send as `model` (default: the bundle folder's name)")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                   help=f"answers computed at once (default {d.max_concurrent})")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"requests waiting beyond those; more get 503 + Retry-After (default {d.max_queue})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels)
    p.add_argument("--max-messages", type=int, default=d.max_messages)
    p.add_argument("--max-tokens-limit", type=int, default=d.max_tokens_limit, help="largest max_tokens accepted")
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
    p.add_argument("--image-folder", help="allow image_url to name files inside this folder (default: refused)")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout_s, metavar="S",
                   help=f"seconds a request's headers may take, else 408 and close (default {d.header_timeout_s:g})")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout_s, metavar="S",
                   help=f"seconds its body may take after them, else 408 and close (default {d.body_timeout_s:g})")
    p.add_argument("--keep-alive", type=float, default=d.keep_alive_s, metavar="S",
                   help=f"seconds an idle connection stays open between requests (default {d.keep_alive_s:g})")
    p.add_argument("--max-connections", type=int, default=d.max_connections,
                   help=f"open connections at once; one more gets 503 and is closed (default {d.max_connections})")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per session (default: all cores)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def settings_from(args) -> ServeSettings:
    return ServeSettings(bundle=args.bundle, host=args.host, port=args.port, api_key=args.api_key,
                         providers=tuple(args.provider or ["cpu"]), model_name=args.model_name,
                         max_concurrent=args.max_concurrent, max_queue=args.max_queue,
                         max_body_bytes=args.max_body_bytes, max_image_pixels=args.max_image_pixels,
                         max_messages=args.max_messages, max_tokens_limit=args.max_tokens_limit,
                         default_max_tokens=args.default_max_tokens, image_folder=args.image_folder,
                         threads=args.threads, header_timeout_s=args.header_timeout,
                         body_timeout_s=args.body_timeout, keep_alive_s=args.keep_alive,
                         max_connections=args.max_connections)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from(args)
        if not is_localhost(settings.host) and settings.api_key is None:
            print(f"warning: listening on {settings.host} without --api-key: anyone who can reach this port "
                  "can use the model", file=sys.stderr)
        from .app import create_app              # heavy, optional: FastAPI (the serve extra)
        app = create_app(settings)
    except (SettingsError, RuntimeInputError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    import uvicorn                               # heavy, optional: uvicorn (the serve extra)

    from .protocol import uvicorn_options        # it subclasses uvicorn's protocol
    print(f"serving {settings.served_name!r} from {settings.bundle} on http://{settings.host}:{settings.port}/v1 "
          f"({settings.max_concurrent} at once, {settings.max_queue} queued, {settings.max_connections} "
          f"connections)", file=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, **uvicorn_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
