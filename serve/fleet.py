"""The same app as ``python -m serve``, as a Ray Serve deployment: N replicas, each loads one model.

    clients --HTTP--> Ray's HTTP proxy (http_options: host, port) --+--> replica 1: create_app(settings), one VLM
    (OpenAI API)      routes each request to the less busy of       +--> replica 2: create_app(settings), one VLM
                      two replicas; waits there when all are full   +--> ... (num_replicas, on any node of the cluster)

Every replica runs exactly the ASGI app ``serve.create_app`` returns (Guard: API key, body size;
Admission: max_concurrent running, max_queue waiting, then 503), so a request gets the same
answer, errors and limits from the fleet as from one ``just serve`` process.  ``X-Replica``
(hostname:pid) says which replica answered.

Which one?
  * one process, ``just serve`` (uvicorn): a robot or a Jetson answering its own questions; no Ray,
    nothing beside the model and one Python process in memory.
  * Ray Serve, ``serve run serve/fleet.yaml``: a GPU box or a cluster answering many robots: replicas
    placed by Ray (num_gpus / num_cpus each, over the nodes), restarted by Ray when they die, one
    endpoint.  Costs a Ray instance beside the replicas (GCS, raylet, controller, proxy, agents:
    ~1.3 GB measured on a laptop-class box, with the dashboard; a tiny-bundle replica is ~185 MB).

    serve run serve/fleet.yaml          # from the repo root (replicas import `serve` from there); Ctrl-C stops
    from ray import serve as ray_serve                    # or from Python
    from serve.fleet import build
    ray_serve.run(build({"bundle": "bundles/spatial", "num_replicas": 2}), blocking=True)

``build(args)`` is the application builder a Serve config names (``import_path: serve.fleet:build``).
Its args are ServeSettings' fields (bundle, api_key, providers, model_name, max_concurrent,
max_queue, max_body_bytes, max_image_pixels, max_messages, max_text_chars, max_tokens_limit,
default_max_tokens, image_folder, threads) plus how Ray places the replicas (num_replicas,
num_cpus, num_gpus per replica) and routes to them (max_ongoing_requests, max_queued_requests).
ServeSettings' host and port are refused here: Ray's HTTP proxy listens where the config's
``http_options`` (or ``serve.start(http_options=...)``) say, not where a replica would.  So are the
connection deadlines and cap of ``just serve`` (header_timeout_s, body_timeout_s, keep_alive_s,
max_connections): the proxy reads the requests and holds the sockets, with its own
``http_options`` (request_timeout_s, keep_alive_timeout_s).
Without ``api_key``, $ADAPTVIS_API_KEY of the process that builds the app is used (Ray logs the
args in plain text: prefer the variable to writing the key into the config).

Routing: Ray sends a replica at most max_ongoing_requests (default max_concurrent + max_queue: what
its own Admission holds, as one ``just serve`` would) and keeps the rest in its proxy, up to
max_queued_requests (default max_queue, per proxy); past that the proxy itself answers 503 with
``Retry-After: 1`` and a plain-text body (not OpenAI's JSON error).  The bundle path is read by
each replica: relative to the directory Ray was started in; on a cluster, a path on every node.

Ray is imported only inside this module's functions: ``serve`` and ``python -m serve`` do not need it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import numbers
import os

from . import create_app
from .settings import ServeSettings, SettingsError

DEPLOYMENT = "VLMReplica"
API_KEY_ENV = "ADAPTVIS_API_KEY"        # as for `python -m serve`: the key without writing it into a config file

# Where and how clients connect: Ray's HTTP proxy holds the sockets, so these ServeSettings are refused.
PROXY_ARGS = ("host", "port")
CONNECTION_ARGS = ("header_timeout_s", "body_timeout_s", "keep_alive_s", "max_connections")
SETTINGS_ARGS = tuple(f.name for f in dataclasses.fields(ServeSettings)
                      if f.name not in PROXY_ARGS + CONNECTION_ARGS)
RAY_ARGS = ("num_replicas", "num_cpus", "num_gpus", "max_ongoing_requests", "max_queued_requests")
KNOWN_ARGS = SETTINGS_ARGS + RAY_ARGS
# Ray's own proxy queue: past it (per proxy), Ray answers 503 with this Retry-After.
RETRY_AFTER_S = 1


def build(args: dict):
    """A Serve config's ``args`` -> the Ray Serve Application (``serve.run(build({...}))``).

    Raises SettingsError (a ValueError) for an unknown key, host/port, a bad value or a missing
    bundle, before anything is deployed.  The bundle itself is loaded, and checked, by each replica.
    """
    settings, options = deployment_options(args)
    return deployment().options(**options).bind(settings)


def deployment_options(args: dict) -> tuple[ServeSettings, dict]:
    """Validate ``args``: the ServeSettings every replica gets, and the options of its Ray deployment."""
    if not isinstance(args, dict):
        raise SettingsError(f"the application's args must be a mapping, got {type(args).__name__}")
    args = dict(args)
    for key in PROXY_ARGS:
        if key in args:
            raise SettingsError(f"{key!r} is not an arg of the Ray Serve app: Ray's HTTP proxy listens where the "
                                "config's http_options (host, port) say, for every application")
    for key in CONNECTION_ARGS:
        if key in args:
            raise SettingsError(f"{key!r} cannot be honoured by the Ray Serve app: Ray's HTTP proxy, not a replica, "
                                "reads the requests and holds the connections; its limits are the config's "
                                "http_options (request_timeout_s, keep_alive_timeout_s)")
    unknown = sorted(str(k) for k in args if k not in KNOWN_ARGS)
    if unknown:
        raise SettingsError(f"unknown arg{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(KNOWN_ARGS)}")
    if not args.get("bundle") or not isinstance(args["bundle"], (str, os.PathLike)):
        raise SettingsError("'bundle' is required: the bundle folder every replica loads (written by `just export`)")
    args["bundle"] = os.fspath(args["bundle"])
    _check_types(args)
    if args.get("api_key") is None and os.environ.get(API_KEY_ENV):
        args["api_key"] = os.environ[API_KEY_ENV]
    ray_args = {k: args.pop(k) for k in RAY_ARGS if k in args}
    settings = ServeSettings(**args)              # its own range checks: SettingsError naming the field

    replicas = ray_args.get("num_replicas", 1)
    _check_int("num_replicas", replicas, 1)
    actor: dict = {}
    for key in ("num_cpus", "num_gpus"):
        if key in ray_args:
            value = ray_args[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < float("inf"):
                raise SettingsError(f"{key} (per replica) must be a number >= 0, got {value!r}")
            actor[key] = value
    # A replica holds what one `just serve` holds (max_concurrent running + max_queue waiting, in its own
    # Admission); Ray sends it no more than that, and keeps the rest in its proxy, up to max_queued_requests.
    ongoing = ray_args.get("max_ongoing_requests", settings.capacity)
    _check_int("max_ongoing_requests", ongoing, 1)
    queued = ray_args.get("max_queued_requests", settings.max_queue or 1)
    if queued != -1:
        _check_int("max_queued_requests (or -1: no limit)", queued, 1)
    options = {"num_replicas": replicas, "max_ongoing_requests": ongoing, "max_queued_requests": queued,
               "backpressure_config": {"status_code": 503, "retry_after_s": RETRY_AFTER_S}}
    if actor:
        options["ray_actor_options"] = actor
    return settings, options


def _check_types(args: dict) -> None:
    """What a YAML file can get wrong that ServeSettings (typed by argparse under `python -m serve`) takes."""
    providers = args.get("providers", "cpu")
    if not (isinstance(providers, str) or (isinstance(providers, (list, tuple)) and providers
                                           and all(isinstance(p, str) for p in providers))):
        raise SettingsError(f"providers must be a name or a list of names (cpu, cuda, tensorrt), got {providers!r}")
    for key in ("model_name", "image_folder"):
        if args.get(key) is not None and not isinstance(args[key], str):
            raise SettingsError(f"{key} must be a string, got {args[key]!r}")
    if args.get("threads") is not None:
        _check_int("threads", args["threads"], 1)


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SettingsError(f"{name} must be an int >= {low}, got {value!r}")


class Replica:
    """One replica of the fleet: the settings at __init__, the model loaded when Ray asks for the app.

    A plain class, so this module imports without Ray; ``deployment()`` applies Ray's decorators,
    exactly as ``@serve.deployment(name="VLMReplica") @serve.ingress()`` written above it would.
    """

    def __init__(self, settings: ServeSettings):
        self.settings = settings

    async def __serve_build_asgi_app__(self):
        # Ray (2.60+) calls this on the replica's event loop after __init__, because ingress() got no
        # app.  Loading a bundle takes seconds to minutes, so it runs on a thread.  A bad bundle raises
        # here: Ray marks the replica failed, with the runtime's reason in its log, and retries it.
        return await asyncio.to_thread(create_app, self.settings)


_DEPLOYMENT = None


def deployment():
    """The Ray Serve Deployment ``VLMReplica`` (made, and Ray imported, on first use)."""
    global _DEPLOYMENT
    if _DEPLOYMENT is None:
        from ray import serve               # heavy, optional: Ray (the fleet extra)
        _DEPLOYMENT = serve.deployment(name=DEPLOYMENT)(serve.ingress()(Replica))
    return _DEPLOYMENT


def __getattr__(name: str):
    """``serve.fleet.VLMReplica``: the Deployment (imports Ray)."""
    if name == DEPLOYMENT:
        return deployment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
