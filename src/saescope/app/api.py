"""The app's JSON API (documented at ``/docs`` by FastAPI's OpenAPI schema): features, search, steering.

Model work (search by text, steering) runs on the one model thread (``jobs.JobQueue``); a full queue is
503 with ``Retry-After``, a job slower than ``AppConfig.timeout`` is 504. Unknown RUNs and feature ids are
404, invalid input 400/422, and nothing the client sends is ever used as a path.
"""

import asyncio
import json
import math
import queue
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from saescope.app.jobs import Busy
from saescope.app.schemas import GraphInterveneBody, SteerBody
from saescope.app.state import AppState
from saescope.errors import SaescopeError

if TYPE_CHECKING:
    import pandas as pd

    from saescope.features.run import FeatureRun

router = APIRouter(prefix="/api")


def state_of(request: Request) -> AppState:
    return request.app.state.saescope


def run_or_404(state: AppState, rid: str):
    try:
        return state.run(rid)
    except KeyError:
        raise HTTPException(404, f"no RUN named {rid!r}") from None


def feature_or_404(run, feature: int) -> int:
    try:
        return run.check_feature(feature)
    except SaescopeError as exc:
        raise HTTPException(404, str(exc)) from None


def graph_or_404(state: AppState, gid: str) -> str:
    if gid not in state.graphs:
        raise HTTPException(404, f"no graph named {gid!r}")
    return gid


async def on_model_thread(request: Request, job):
    """Run ``job`` on the model thread; 503 when the queue is full, 504 after the time-out, 400 for user errors."""
    try:
        future = request.app.state.jobs.submit(job)
    except Busy:
        raise HTTPException(503, "the model is busy: retry shortly", headers={"Retry-After": "2"}) from None
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), request.app.state.config.timeout)
    except asyncio.TimeoutError:
        raise HTTPException(504, "the model took too long") from None
    except SaescopeError as exc:
        raise HTTPException(400, str(exc)) from None


def _records(frame) -> list[dict]:
    """JSON-safe records (NaN -> None, numpy -> Python)."""
    return json.loads(frame.to_json(orient="records", double_precision=15))


@router.get("/runs")
def runs(request: Request) -> list[dict]:
    """The RUNs this app serves, by id."""
    keys = ("model", "sae", "hook", "d_sae", "tokens", "corpus")
    return [{"id": rid, **{k: run.manifest.get(k) for k in keys}} for rid, run in state_of(request).runs.items()]


@router.get("/runs/{rid}/features")
def features(request: Request, rid: str, sort: str = "log10_density", descending: bool = True,
             limit: int = Query(100, ge=1, le=100_000), offset: int = Query(0, ge=0)) -> dict:
    """One page of the RUN's feature table, sorted by any statistic (explanations included when present)."""
    run = run_or_404(state_of(request), rid)
    stats = run.stats
    if sort not in stats.columns or sort == "top_tokens":
        raise HTTPException(400, f"cannot sort by {sort!r}")
    rows = stats.sort_values(sort, ascending=not descending).iloc[offset:offset + limit].copy()
    rows["explanation"] = run.explanation_labels(list(rows.feature))
    rows["top_tokens"] = [list(t)[:10] for t in rows.top_tokens]
    return {"total": len(stats), "rows": _records(rows)}


@router.get("/runs/{rid}/features/{feature}")
def feature(request: Request, rid: str, feature: int, examples: int = Query(20, ge=0, le=200)) -> dict:
    """Everything about one feature: statistics, top tokens, contexts, logit effects, explanations, neighbours."""
    state = state_of(request)
    run = run_or_404(state, rid)
    feature = feature_or_404(run, feature)
    info = run.feature(feature)
    return {"feature": feature, "stats": json.loads(json.dumps(info["stats"], default=_plain)),
            "top_tokens": _records(info["top_tokens"][["token", "max_activation"]].head(20)),
            "examples": _records(info["examples"].head(examples)[["activation", "context_tokens", "context_acts", "center"]]),
            "promoted": info["promoted"].token.tolist(), "suppressed": info["suppressed"].token.tolist(),
            "explanations": run.explanations().get(feature, []),
            "explanation_label": run.explanation_labels([feature])[0],
            "neighbours": [{"feature": f, "cosine": c} for f, c in state.neighbours(rid, feature)]}


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return None if isinstance(value, float) and math.isnan(value) else str(value)


@router.get("/runs/{rid}/search")
async def search(request: Request, rid: str, token: str | None = None, text: str | None = None,
                 explanation: str | None = None, n: int = Query(15, ge=1, le=200)) -> list[dict]:
    """Features by a token they fire on, by a text (per-token activations), or by what their explanation says."""
    state = state_of(request)
    run = run_or_404(state, rid)
    given = [q for q in (token, text, explanation) if q is not None]
    if len(given) != 1:
        raise HTTPException(400, "give exactly one of token, text or explanation")
    if len(given[0]) > request.app.state.config.max_prompt_chars:
        raise HTTPException(400, f"the query is longer than {request.app.state.config.max_prompt_chars} characters")
    from saescope.features.search import features_for_text, features_for_token

    if token is not None:
        try:
            return _labelled(run, features_for_token(run, token, n))
        except SaescopeError as exc:
            raise HTTPException(404, str(exc)) from None
    if text is not None:
        job = lambda: features_for_text(run, state.lm, state.sae(rid), run.manifest["hook"], text, n)
    else:
        from saescope.autointerp.search import features_by_explanation

        job = lambda: features_by_explanation(run, explanation, n)
    return _labelled(run, await on_model_thread(request, job))


def _labelled(run: "FeatureRun", rows: "pd.DataFrame") -> list[dict]:
    """Search results with each feature's explanation and its scores (with 95 % intervals) beside the id."""
    from saescope.features.explanations import score_text

    rows = rows.copy()
    if "explanation" in rows:  # found by explanation: the scores of that very explanation
        explained = run.explanations()
        rows["scores"] = [next((score_text(e) for e in explained.get(int(r.feature), [])
                                if e["explainer"] == r.explainer and e["model"] == r.model), "")
                          for r in rows.itertuples()]
    elif any(labels := run.explanation_labels(list(rows.feature))):
        rows["explanation"] = labels
    return _records(rows)


def _steering(state: AppState, body: SteerBody, config):
    from saescope.steering.features import FeatureEdit, FeatureSteering

    run = run_or_404(state, body.run)
    if len(body.edits) > config.max_features or body.max_new_tokens > config.max_new_tokens:
        raise HTTPException(400, f"at most {config.max_features} edits and {config.max_new_tokens} new tokens")
    if len(body.prompt) > config.max_prompt_chars:
        raise HTTPException(400, f"the prompt is longer than {config.max_prompt_chars} characters")
    if any(abs(e.value) > config.max_coefficient for e in body.edits):
        raise HTTPException(400, f"steering values must be within ±{config.max_coefficient:g}")
    for e in body.edits:
        feature_or_404(run, e.feature)
    return lambda: FeatureSteering(state.sae(body.run), [FeatureEdit(e.feature, e.op, e.value) for e in body.edits],
                                   hook=run.manifest["hook"])


@router.post("/steer")
async def steer(request: Request, body: SteerBody) -> dict:
    """Plain and steered continuations of one prompt, same seed, side by side."""
    from saescope.model.generation import generate

    state, build = state_of(request), _steering(state_of(request), body, request.app.state.config)

    def job() -> dict:
        started = time.perf_counter()
        kwargs = dict(max_new_tokens=body.max_new_tokens, temperature=body.temperature, seed=body.seed, chat=body.chat)
        plain = generate(state.lm, [body.prompt], None, **kwargs)[0][0]
        steered = generate(state.lm, [body.prompt], build(), **kwargs)[0][0]
        tokens = len(state.lm.encode(plain + steered))
        seconds = time.perf_counter() - started
        return {"plain": plain, "steered": steered, "seconds": seconds, "tokens_per_s": tokens / seconds}

    return await on_model_thread(request, job)


class _Sink:
    """A transformers streamer that puts each new piece of text on a queue, tagged plain/steered."""

    def __init__(self, tokenizer, out: queue.Queue, which: str) -> None:
        self.tokenizer, self.out, self.which, self.ids, self.sent, self.prompt_seen = tokenizer, out, which, [], "", False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.ids += value.flatten().tolist()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > len(self.sent) and not text.endswith("\ufffd"):
            self.out.put({"which": self.which, "text": text[len(self.sent):]})
            self.sent = text

    def end(self) -> None:
        self.out.put({"which": self.which, "done": True})


@router.post("/steer/stream")
async def steer_stream(request: Request, body: SteerBody) -> StreamingResponse:
    """Server-sent events: the plain continuation's pieces as they are generated, then the steered one's."""
    from saescope.model.generation import generate

    state, build = state_of(request), _steering(state_of(request), body, request.app.state.config)
    pieces: queue.Queue = queue.Queue()

    def job() -> None:
        kwargs = dict(max_new_tokens=body.max_new_tokens, temperature=body.temperature, seed=body.seed, chat=body.chat)
        try:
            for which, intervention in (("plain", None), ("steered", build())):
                generate(state.lm, [body.prompt], intervention, **kwargs, streamer=_Sink(state.lm.tokenizer, pieces, which))
        except Exception as exc:  # noqa: BLE001 - reported in the stream, the model thread lives on
            pieces.put({"error": str(exc)[:300]})
        pieces.put(None)

    try:
        request.app.state.jobs.submit(job)
    except Busy:
        raise HTTPException(503, "the model is busy: retry shortly", headers={"Retry-After": "2"}) from None

    async def events():
        while (piece := await asyncio.to_thread(pieces.get)) is not None:
            yield f"data: {json.dumps(piece)}\n\n"
        yield "data: {\"finished\": true}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/graphs/{gid}/intervene")
async def graph_intervene(request: Request, gid: str, body: GraphInterveneBody) -> dict:
    """Scale (0: ablate) feature nodes of graph ``gid`` in the real model and re-run its prompt: the top
    next tokens before and after, and the graph's logit tokens."""
    from saescope.circuits.graph_intervene import scale_graph_features

    state = state_of(request)
    graph_or_404(state, gid)
    limit = request.app.state.config.max_coefficient
    if abs(body.scale) > limit:
        raise HTTPException(400, f"the scale must be within ±{limit:g}")

    def job() -> dict:
        meta, _ = state.graph(gid)
        return scale_graph_features(state.lm, state.transcoders(gid), meta["tokens"], body.nodes, body.scale,
                                    watch=meta["logit_tokens"])

    return await on_model_thread(request, job)
