"""The app: ``create_app(state, config)`` and ``serve`` (uvicorn).

Bound to 127.0.0.1 by default. With a token (``--token`` or ``$SAESCOPE_APP_TOKEN``; required for any
other address), every request needs ``Authorization: Bearer <token>`` or the cookie a browser gets by
opening any page once with ``?token=<token>``. No CORS headers are sent, so other sites' pages cannot
read the API. Requests whose ``Host`` is not loopback, the bound address or an ``--allowed-hosts`` name
are refused (DNS rebinding; ``saescope.http_guard``), and so are bodies over 1 MB.

``/docs`` is a small API page rendered here from the OpenAPI schema (FastAPI's Swagger UI and ReDoc
load their scripts from a CDN, so they are switched off: the app works offline).
"""

import hmac
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from saescope.app.config import AppConfig
from saescope.app.jobs import JobQueue
from saescope.app.state import AppState
from saescope.errors import SaescopeError
from saescope.http_guard import LOOPBACK_HOSTS, GuardMiddleware, allowed_hosts

COOKIE = "saescope_token"
MAX_BODY_BYTES = 1 << 20  # the largest request body (a steering request is a few hundred bytes)


def create_app(state: AppState, config: AppConfig | None = None, token: str | None = None):
    """The FastAPI application. Example::

        app = create_app(AppState.from_paths([Path("runs/default")]))
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
    except ImportError:
        raise SaescopeError("the app needs FastAPI: pip install 'saescope[app]'") from None
    from saescope.app import api, pages

    config = config or AppConfig()
    app = FastAPI(title="saescope", description="Features, search and steering over local RUNs.", docs_url=None,
                  redoc_url=None)
    app.state.saescope, app.state.config, app.state.jobs = state, config, JobQueue(config.queue_size)

    async def authorize(request: Request, call_next):
        given = request.headers.get("authorization", "").removeprefix("Bearer ") or request.cookies.get(COOKIE) \
            or request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    if token:  # without one there is nothing to check: no middleware on the path of every request
        app.middleware("http")(authorize)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with where and what, never the input echoed back (it may be NaN, which JSON cannot carry)."""
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "invalid")} for e in exc.errors()]
        return JSONResponse({"detail": errors[:10]}, status_code=422)

    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_middleware(GuardMiddleware, hosts=allowed_hosts(config.host, config.allowed_host_names),
                       max_body_bytes=MAX_BODY_BYTES)
    return app



SPEC_VARIABLE = "SAESCOPE_APP_SPEC"  # how ``serve`` tells each worker process what to load


def serve(runs: list[Path], reports: list[Path], config: AppConfig, token: str | None = None,
          graphs: list[Path] | None = None) -> None:
    """Serve until Ctrl-C, in ``config.workers`` processes (uvicorn's workers; 0: one per core, at most 2).

    Every worker loads the RUNs (and, on its first steering request, the model) and has its own model
    queue of ``queue_size / workers`` jobs. Page and search requests are spread over the processes by the
    kernel, so they use every core instead of one Python interpreter's."""
    import uvicorn

    if config.host not in LOOPBACK_HOSTS and not token:
        raise SaescopeError(f"serving on {config.host} (not loopback) needs a token: --token or $SAESCOPE_APP_TOKEN")
    workers = config.workers or max(1, min(2, os.cpu_count() or 1))
    config = replace(config, workers=workers, queue_size=max(1, config.queue_size // workers))
    graphs = list(graphs or [])
    AppState.from_paths(runs, reports, config.device, config.dtype, graphs)  # bad folders fail here, with one message
    os.environ[SPEC_VARIABLE] = json.dumps({"runs": [str(p) for p in runs], "reports": [str(p) for p in reports],
                                            "graphs": [str(p) for p in graphs], "config": asdict(config),
                                            "token": token})
    uvicorn.run("saescope.app.server:app_from_environment", factory=True, host=config.host, port=config.port,
                workers=workers, log_level="warning")


def app_from_environment():
    """The app of one worker process, from what ``serve`` put in ``$SAESCOPE_APP_SPEC``."""
    spec = json.loads(os.environ[SPEC_VARIABLE])
    config = AppConfig(**spec["config"])
    state = AppState.from_paths([Path(p) for p in spec["runs"]], [Path(p) for p in spec["reports"]], config.device,
                                config.dtype, [Path(p) for p in spec.get("graphs", [])])
    app = create_app(state, config, spec["token"])
    app.state.jobs.submit(lambda: state.lm)  # load the model now, on the model thread, not on the first steer
    return app
