"""The app: ``create_app(state, config)`` and ``serve`` (uvicorn).

Bound to 127.0.0.1 by default. With a token (``--token`` or ``$SAESCOPE_APP_TOKEN``; required for any
other address), every request needs ``Authorization: Bearer <token>`` or the cookie a browser gets by
opening any page once with ``?token=<token>``. No CORS headers are sent, so other sites' pages cannot
read the API.
"""

import hmac

from saescope.app.config import AppConfig
from saescope.app.jobs import JobQueue
from saescope.app.state import AppState
from saescope.autointerp.http_client import LOOPBACK_HOSTS
from saescope.errors import SaescopeError

COOKIE = "saescope_token"


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
    app = FastAPI(title="saescope", description="Features, search and steering over local RUNs.")
    app.state.saescope, app.state.config, app.state.jobs = state, config, JobQueue(config.queue_size)

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if not token:
            return await call_next(request)
        given = request.headers.get("authorization", "").removeprefix("Bearer ") or request.cookies.get(COOKIE) \
            or request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with where and what, never the input echoed back (it may be NaN, which JSON cannot carry)."""
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "invalid")} for e in exc.errors()]
        return JSONResponse({"detail": errors[:10]}, status_code=422)

    app.include_router(api.router)
    app.include_router(pages.router)
    return app


def serve(state: AppState, config: AppConfig, token: str | None = None) -> None:
    """Serve until Ctrl-C."""
    import uvicorn

    if config.host not in LOOPBACK_HOSTS and not token:
        raise SaescopeError(f"serving on {config.host} (not loopback) needs a token: --token or $SAESCOPE_APP_TOKEN")
    uvicorn.run(create_app(state, config, token), host=config.host, port=config.port, log_level="warning")
