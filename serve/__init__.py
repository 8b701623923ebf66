"""An OpenAI-compatible HTTP server for one bundle (``python -m serve`` / ``just serve``), its Ray Serve
deployment for a fleet (``fleet.py``, ``fleet.yaml``); its load test is a harness (``bench/loadtest.py``).

    from serve import ServeSettings, create_app
    app = create_app(ServeSettings(bundle="bundles/spatial"))      # an ASGI app: uvicorn.run(app)

Needs the ``serve`` extra (FastAPI, uvicorn); the runtime itself does not.
"""
from .settings import ServeSettings, SettingsError


def create_app(settings: ServeSettings, vlm=None):
    from .app import create_app as build          # heavy, optional: FastAPI (the serve extra)
    return build(settings, vlm)


__all__ = ["ServeSettings", "SettingsError", "create_app"]
