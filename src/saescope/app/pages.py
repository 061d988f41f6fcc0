"""The app's HTML pages: home, a RUN's feature table with search, a feature page, the steering playground,
attribution graphs, and the reports in the allow-listed folders. Everything is served locally (no CDN)."""

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from saescope.app.api import feature_or_404, graph_or_404, run_or_404, state_of
from saescope.reports import render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> str:
    state = state_of(request)
    return render("app_home.html", runs=state.runs, reports=state.reports, graphs=state.graphs)


@router.get("/runs/{rid}", response_class=HTMLResponse)
def run_page(request: Request, rid: str) -> str:
    from saescope.features.dashboard import index_context

    run = run_or_404(state_of(request), rid)
    search = render("app_search.html", rid=rid)
    return render("dashboard_index.html", **index_context(run, None), feature_href=f"/runs/{rid}/features/{{}}",
                  extra_header=search)


@router.get("/runs/{rid}/features/{feature}", response_class=HTMLResponse)
def feature_page(request: Request, rid: str, feature: int) -> str:
    from saescope.features.dashboard import feature_context

    state = state_of(request)
    run = run_or_404(state, rid)
    feature = feature_or_404(run, feature)

    neighbours = state.neighbours(rid, feature)
    near = [n for n, _ in neighbours]
    return render("dashboard_feature.html", **feature_context(run, feature),
                  explanations=run.explanations().get(feature, []),
                  index_url=f"/runs/{rid}", steer_url=f"/steer?run={rid}&feature={feature}",
                  neighbours=neighbours, neighbour_href=f"/runs/{rid}/features/{{}}",
                  neighbour_explanations=dict(zip(near, run.explanation_labels(near))))


@router.get("/graphs/{gid}", response_class=HTMLResponse)
def graph_page(request: Request, gid: str) -> str:
    """The interactive attribution graph, with feature-page links and intervening on pinned features."""
    from saescope.circuits.graph_html import graph_html

    state = state_of(request)
    _, exported = state.graph(graph_or_404(state, gid))
    links = state.feature_links(gid)
    api = {layer: "/api" + link + "?examples=3" for layer, link in links.items()}
    return graph_html(exported, feature_links=links, intervene_url=f"/api/graphs/{gid}/intervene", feature_api=api)


@router.get("/steer", response_class=HTMLResponse)
def steer_page(request: Request) -> str:
    config = request.app.state.config
    return render("app_steer.html", runs=list(state_of(request).runs), max_new_tokens=config.max_new_tokens,
                  max_features=config.max_features)


@router.get("/reports/{name}")
def report(request: Request, name: str) -> FileResponse:
    reports = state_of(request).reports
    if name not in reports:
        raise HTTPException(404, f"no report named {name!r}")
    return FileResponse(reports[name], media_type="text/html")


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> str:
    """The API, listed from the OpenAPI schema (offline: no Swagger UI scripts from a CDN)."""
    schema = request.app.openapi()
    endpoints = [{"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                  "description": op.get("description", ""),
                  "parameters": [p["name"] + ("" if not p.get("required") else " (required)") for p in op.get("parameters", [])],
                  "body": next(iter(op.get("requestBody", {}).get("content", {}).get("application/json", {})
                                    .get("schema", {}).values()), "")}
                 for path, item in schema["paths"].items() for method, op in item.items()
                 if path.startswith("/api/")]
    return render("app_docs.html", title=schema["info"]["title"], endpoints=endpoints)
