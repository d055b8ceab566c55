"""The review app's FastAPI application: pages, JSON API and image renditions.

Every page, API route, image and static file needs a logged-in session (anonymous: 401 for the
API, images and static files, a redirect to the login page for pages). Every state-changing
request carries the session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf_token``).
A reviewer sees and decides only tasks they claimed; the admin page and its API need the admin role.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from hitl_assets.review_app import images as imgs
from hitl_assets.review_app.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    PRELOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    LoginLimiter,
    Sessions,
    tokens_equal,
    verify_password,
)
from hitl_assets.review_app.stats import admin_stats
from ml.imageio import ImageRejected, decode_mask, encode_png
from ml.policy import Policy
from resources.object_store import InvalidKeyError, ObjectStore, validate_key
from resources.review_store import ReviewStore, ReviewStoreError, ReviewTask

log = logging.getLogger("hitl.review_app")

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_NOTE = 2000
MAX_SECONDS = 3600.0
SPOT_CHECK = "spot_check"  # what an audit (and a hidden gold check) shows as its reason


@dataclass(frozen=True)
class User:
    name: str
    role: str
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class NotLoggedIn(Exception):
    """No valid session: 401 for the API and images, a redirect for pages."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path.startswith("/img/") or path.startswith("/static/")) and request.method == "GET"


class SecurityHeaders:
    """Pure ASGI middleware: defensive response headers on every answer."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
            b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    ]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.HEADERS if name not in names]
                message["headers"] = headers
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def create_app(
    store: ReviewStore,
    objects: ObjectStore,
    policy: Policy | Any,
    secret: str,
    *,
    display_side: int = 1600,
    max_upload_bytes: int = 64 * 1024 * 1024,
    secure_cookies: bool | None = None,
    login_limiter: LoginLimiter | None = None,
    rendition_cache_bytes: int = 256 * 1024 * 1024,
) -> FastAPI:
    """The review app on ``store`` (tasks and decisions) and ``objects`` (images, masks, corrections).

    ``policy`` (a ``Policy`` or a ``TolerancePolicy`` resource) gives the claim size, the break
    cadence, the claim timeout and the failure-mode taxonomy. ``secret`` signs session cookies.
    ``secure_cookies``: None marks cookies Secure when the request came over HTTPS.
    """
    if hasattr(policy, "load") and not isinstance(policy, Policy):
        policy = policy.load()
    if not secret or len(secret) < 16:
        raise ValueError("the session secret must be at least 16 characters")
    review = policy.review
    failure_modes = list(policy.failure_modes)
    sessions = Sessions(secret)
    limiter = login_limiter or LoginLimiter()
    cache = imgs.RenditionCache(rendition_cache_bytes)
    size_lock = threading.Lock()
    sizes: dict[int, tuple[int, int]] = {}

    app = FastAPI(title="HITL review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityHeaders)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.store, app.state.objects, app.state.policy = store, objects, policy

    # -- errors ------------------------------------------------------------------------------

    @app.exception_handler(NotLoggedIn)
    async def _not_logged_in(request: Request, _exc: NotLoggedIn):
        if _wants_html(request):
            target = request.url.path
            return RedirectResponse(f"/login?next={target}" if target not in ("/", "/login") else "/login", status_code=303)
        return JSONResponse({"detail": "login required"}, status_code=401)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError):
        # Malformed ids, keys and fields (e.g. "../" where a number belongs) are a plain 400.
        return JSONResponse({"detail": "bad request"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        if _wants_html(request) and exc.status_code in (403, 404):
            return HTMLResponse(f"<!doctype html><title>{exc.status_code}</title><p>{exc.status_code}: {'not allowed' if exc.status_code == 403 else 'not found'}. <a href='/'>Back to the queue</a></p>", status_code=exc.status_code, headers=headers)
        detail = exc.detail if isinstance(exc.detail, (str, dict)) else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    # -- sessions ----------------------------------------------------------------------------

    def current_user(request: Request) -> User:
        data = sessions.read(request.cookies.get(SESSION_COOKIE))
        if data is None:
            raise NotLoggedIn()
        account = store.get_user(data["u"])
        if account is None:
            raise NotLoggedIn()
        return User(name=account.name, role=account.role, csrf=data["c"])

    async def csrf_user(request: Request, user: User = Depends(current_user)) -> User:
        token = request.headers.get(CSRF_HEADER)
        if not token and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
        if not tokens_equal(token, user.csrf):
            raise HTTPException(403, "missing or wrong CSRF token")
        return user

    def admin_user(user: User = Depends(current_user)) -> User:
        if not user.is_admin:
            raise HTTPException(403, "admins only")
        return user

    def cookie_secure(request: Request) -> bool:
        if secure_cookies is not None:
            return secure_cookies
        return request.url.scheme == "https"

    def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, httponly=True, samesite="strict" if name == SESSION_COOKIE else "lax",
            secure=cookie_secure(request), path="/",
        )

    # -- tasks -------------------------------------------------------------------------------

    def owned_task(task_id: int, user: User) -> ReviewTask:
        """The task, if ``user`` holds it (claimed or decided by them); 404 otherwise (another reviewer's
        task is indistinguishable from one that does not exist)."""
        if task_id < 1 or task_id > 2**62:
            raise HTTPException(404, "no such task")
        task = store.get_task(task_id)
        if task is None or task.claimed_by != user.name or task.status not in ("claimed", "decided"):
            raise HTTPException(404, "no such task")
        return task

    def start_mask_key(task: ReviewTask, user: User) -> str:
        """The mask the item view starts painting from: the reviewer's latest correction, else the AI mask."""
        mine = [e for e in store.task_events(task.id) if e.reviewer == user.name and e.corrected_mask_key]
        return mine[-1].corrected_mask_key if mine else task.mask_key

    def task_size(task: ReviewTask) -> tuple[int, int]:
        if task.width > 0 and task.height > 0:
            return task.width, task.height
        with size_lock:
            if task.id in sizes:
                return sizes[task.id]
        size = imgs.image_size(objects.get_bytes(validate_key(task.image_key)), task.image_key)
        with size_lock:
            sizes[task.id] = size
        return size

    def break_state(user: User) -> dict:
        every, seconds = review.break_after_items, review.break_seconds
        count, times = store.reviewer_activity(user.name, 1)
        state = {"every": every, "seconds": seconds, "reviewed": count, "until": None, "remaining_s": 0}
        if seconds <= 0 or count == 0 or count % every != 0 or not times:
            return state
        until = _utc(times[0]) + timedelta(seconds=seconds)
        remaining = (until - datetime.now(timezone.utc)).total_seconds()
        if remaining > 0:
            state["until"], state["remaining_s"] = until.isoformat(), round(remaining, 1)
        return state

    def queue_state(user: User) -> dict:
        held = store.held_tasks(user.name)
        events = store.latest_events_by(user.name, [t.id for t in held if t.status == "decided"])
        latest = {task_id: event.decision for task_id, event in events.items()}
        items = [
            {"id": t.id, "position": i + 1, "status": "decided" if t.status == "decided" else "todo", "decision": latest.get(t.id), "sku": t.sku, "category": t.category}
            for i, t in enumerate(held)
        ]
        todo = [item for item in items if item["status"] == "todo"]
        return {
            "user": user.name,
            "role": user.role,
            "batch_size": review.batch_size,
            "tasks": items,
            "total": len(items),
            "decided": len(items) - len(todo),
            "next_task_id": todo[0]["id"] if todo else None,
            "break": break_state(user),
        }

    def task_payload(task: ReviewTask, user: User) -> dict:
        state = queue_state(user)
        ids = [item["id"] for item in state["tasks"]]
        position = ids.index(task.id) + 1 if task.id in ids else None
        width, height = task_size(task)
        dw, dh = imgs.display_size(width, height, display_side)
        try:
            signals = json.loads(task.signals or "{}")
        except ValueError:
            signals = {}
        signals = {k: v for k, v in signals.items() if isinstance(v, (int, float, str, bool)) or v is None}
        reasons = [r for r in (task.reasons or "").replace(";", ",").split(",") if r.strip()]
        events = [e for e in store.task_events(task.id) if e.reviewer == user.name]
        mine = events[-1] if events else None
        todo_after = [item["id"] for item in state["tasks"] if item["status"] == "todo" and item["id"] != task.id]
        return {
            "id": task.id,
            "sku": task.sku,
            "category": task.category,
            "file": Path(task.file).name,
            "width": width,
            "height": height,
            "display": {"width": dw, "height": dh},
            # Audits and hidden gold checks look alike: a spot check with no broken threshold.
            "reasons": [r.strip() for r in reasons] or [SPOT_CHECK],
            "signals": signals,
            "failure_modes": failure_modes,
            "status": "decided" if task.status == "decided" else "todo",
            "position": position,
            "total": state["total"],
            "decided": state["decided"],
            "prev_id": ids[position - 2] if position and position > 1 else None,
            "next_id": ids[position] if position and position < len(ids) else None,
            "next_todo_id": todo_after[0] if todo_after else None,
            "mine": None if mine is None else {
                "event_id": mine.id,
                "decision": mine.decision,
                "failure_modes": [m for m in mine.failure_mode.split(",") if m],
                "note": mine.note,
                "has_correction": bool(mine.corrected_mask_key),
            },
            "images": {kind: f"/img/{task.id}/{kind}" for kind in ("original", "composite", "mask")}
            | ({"corrected": f"/img/{task.id}/corrected"} if mine is not None and mine.corrected_mask_key else {}),
            "break": state["break"],
        }

    def parse_modes(value: Any) -> list[str]:
        if value is None or value == "":
            return []
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or len(value) > len(failure_modes):
            raise HTTPException(400, "failure_modes must be a list of the policy's failure modes")
        modes = []
        for mode in value:
            if not isinstance(mode, str) or mode not in failure_modes:
                raise HTTPException(400, f"unknown failure mode {str(mode)[:60]!r}")
            if mode not in modes:
                modes.append(mode)
        return modes

    def parse_common(body: dict) -> tuple[list[str], str, float, str | None]:
        modes = parse_modes(body.get("failure_modes"))
        note = body.get("note") or ""
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise HTTPException(400, f"note must be text of at most {MAX_NOTE} characters")
        try:
            seconds = float(body.get("seconds") or 0.0)
        except (TypeError, ValueError):
            raise HTTPException(400, "seconds must be a number") from None
        if seconds != seconds:  # NaN
            seconds = 0.0
        seconds = min(max(seconds, 0.0), MAX_SECONDS)
        request_id = body.get("request_id") or None
        if request_id is not None and (not isinstance(request_id, str) or not REQUEST_ID.match(request_id)):
            raise HTTPException(400, "request_id must be 8-64 letters, digits, '-' or '_'")
        return modes, note, seconds, request_id

    def replayed(request_id: str | None, task_id: int, user: User) -> dict | None:
        """The answer to a retried request (same idempotency key): the decision recorded the first time."""
        if not request_id:
            return None
        event = store.event_by_request_id(request_id)
        if event is None:
            return None
        if event.task_id != task_id or event.reviewer != user.name:
            raise HTTPException(409, "request_id was already used for another decision")
        return decision_answer(event, user, replay=True)

    def decision_answer(event, user: User, replay: bool = False) -> dict:
        state = queue_state(user)
        return {
            "event_id": event.id,
            "task_id": event.task_id,
            "decision": event.decision,
            "replaces_event_id": event.replaces_event_id,
            "corrected_mask_key": event.corrected_mask_key,
            "replayed": replay,
            "next_task_id": state["next_task_id"],
            "decided": state["decided"],
            "total": state["total"],
            "break": state["break"],
        }

    def ready_to_decide(task_id: int, user: User) -> ReviewTask:
        task = owned_task(task_id, user)
        state = break_state(user)
        if state["until"]:
            raise HTTPException(423, {"message": "break time", "break": state})
        return task

    def record(task: ReviewTask, user: User, decision: str, modes, note, seconds, request_id, corrected_key="") -> dict:
        try:
            event = store.record_decision(
                task.id, user.name, decision, seconds=seconds, failure_mode=",".join(modes), note=note,
                corrected_mask_key=corrected_key, request_id=request_id,
            )
        except ReviewStoreError as exc:
            raise HTTPException(409, str(exc)) from None
        log.info("decision task=%s reviewer=%s decision=%s seconds=%.1f", task.id, user.name, decision, seconds)
        return decision_answer(event, user)

    # -- login -------------------------------------------------------------------------------

    def safe_next(target: str | None) -> str:
        if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or any(c in target for c in "\r\n"):
            return "/"
        return target

    def login_page(request: Request, error: str = "", status: int = 200, next_url: str = "/") -> Response:
        cookie, csrf = sessions.issue_prelogin()
        response = templates.TemplateResponse(
            request, "login.html", {"csrf": csrf, "error": error, "next": safe_next(next_url)}, status_code=status
        )
        set_cookie(response, request, PRELOGIN_COOKIE, cookie, 3600)
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/"):
        return login_page(request, next_url=next)

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        name = str(form.get("username") or "")[:120]
        password = str(form.get("password") or "")[:1024]
        next_url = safe_next(str(form.get("next") or "/"))
        if not tokens_equal(str(form.get(CSRF_FIELD) or ""), sessions.read_prelogin(request.cookies.get(PRELOGIN_COOKIE))):
            return login_page(request, "Your login form expired; please try again.", 403, next_url)
        client = request.client.host if request.client else "unknown"
        keys = (f"user:{name.lower()}", f"addr:{client}")
        wait = limiter.retry_after(*keys)
        if wait:
            log.warning("login refused (too many failures) for user=%r from %s", name, client)
            response = login_page(request, f"Too many failed logins. Try again in {wait} s.", 429, next_url)
            response.headers["Retry-After"] = str(wait)
            return response
        account = store.get_user(name) if name else None
        if not verify_password(account.password_hash if account else None, password):
            limiter.failed(*keys)
            log.warning("failed login for user=%r from %s", name, client)
            return login_page(request, "Wrong user name or password.", 401, next_url)
        limiter.succeeded(keys[0])
        cookie, _csrf = sessions.issue(account.name)
        response = RedirectResponse(next_url, status_code=303)
        set_cookie(response, request, SESSION_COOKIE, cookie, SESSION_MAX_AGE_S)
        response.delete_cookie(PRELOGIN_COOKIE, path="/")
        log.info("login user=%s", account.name)
        return response

    @app.post("/logout")
    async def logout(request: Request, user: User = Depends(csrf_user)):
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=cookie_secure(request))
        return response

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    # -- pages -------------------------------------------------------------------------------

    def page(request: Request, name: str, user: User, **context) -> Response:
        return templates.TemplateResponse(
            request, name,
            {"user": user, "csrf": user.csrf, "failure_modes": failure_modes, "review": review, **context},
        )

    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request, user: User = Depends(current_user)):
        return page(request, "queue.html", user, state=queue_state(user))

    @app.get("/tasks/{task_id}", response_class=HTMLResponse)
    def task_page(request: Request, task_id: int, user: User = Depends(current_user)):
        task = owned_task(task_id, user)
        return page(request, "item.html", user, task_id=task.id)

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request, user: User = Depends(admin_user)):
        return page(request, "admin.html", user, stats=admin_stats(store))

    @app.get("/static/{name}")
    def static(name: str, user: User = Depends(current_user)):
        path = STATIC_DIR / name
        if "/" in name or "\\" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "private, max-age=300"})

    # -- API ---------------------------------------------------------------------------------

    @app.get("/api/me")
    def me(user: User = Depends(current_user)):
        return {"user": user.name, "role": user.role}

    @app.get("/api/queue")
    def api_queue(user: User = Depends(current_user)):
        return queue_state(user)

    @app.post("/api/claim")
    def api_claim(user: User = Depends(csrf_user)):
        state = break_state(user)
        if state["until"]:
            raise HTTPException(423, {"message": "break time", "break": state})
        holding = sum(1 for t in store.held_tasks(user.name) if t.status == "claimed")
        room = review.batch_size - holding
        claimed = []
        if room > 0:
            claimed = store.claim(
                user.name, room, timedelta(minutes=review.claim_timeout_minutes), claim_id=uuid.uuid4().hex[:16]
            )
        return {"claimed": len(claimed), **queue_state(user)}

    @app.get("/api/tasks/{task_id}")
    def api_task(task_id: int, user: User = Depends(current_user)):
        return task_payload(owned_task(task_id, user), user)

    @app.post("/api/tasks/{task_id}/decision")
    async def api_decide(task_id: int, request: Request, user: User = Depends(csrf_user)):
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "expected a JSON body") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "expected a JSON object")
        modes, note, seconds, request_id = parse_common(body)
        owned_task(task_id, user)
        again = replayed(request_id, task_id, user)
        if again is not None:
            return again
        decision = body.get("decision")
        if decision not in ("approve", "reject"):
            raise HTTPException(400, "decision must be 'approve' or 'reject' (a correction is uploaded to /correction)")
        task = ready_to_decide(task_id, user)
        return record(task, user, decision, modes, note, seconds, request_id)

    @app.post("/api/tasks/{task_id}/correction")
    async def api_correct(task_id: int, request: Request, user: User = Depends(csrf_user)):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            raise HTTPException(413, f"the upload is larger than {max_upload_bytes} bytes")
        form = await request.form(max_files=1, max_fields=10, max_part_size=max_upload_bytes + 1)
        upload = form.get("mask")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "expected the corrected mask as a file field 'mask'")
        fields = {key: form.get(key) for key in ("failure_modes", "note", "seconds", "request_id")}
        modes, note, seconds, request_id = parse_common({k: v for k, v in fields.items() if isinstance(v, str)})
        task = owned_task(task_id, user)
        again = replayed(request_id, task_id, user)
        if again is not None:
            return again
        task = ready_to_decide(task_id, user)
        data = await upload.read(max_upload_bytes + 1)
        width, height = task_size(task)
        preview = imgs.display_size(width, height, display_side)
        try:
            mask = imgs.check_corrected_mask(data, [(width, height), preview], max_upload_bytes)
        except imgs.UploadRejected as exc:
            raise HTTPException(exc.status, exc.detail) from None
        if (mask.shape[1], mask.shape[0]) != (width, height):
            # Painted on the preview: merged into the full-size mask the reviewer started from (the one
            # the canvas showed: their own earlier correction, else the AI mask). See merge_preview_correction.
            base_key = start_mask_key(task, user)
            try:
                base = decode_mask(objects.get_bytes(validate_key(base_key)), base_key)
            except (FileNotFoundError, KeyError, InvalidKeyError, ImageRejected):
                raise HTTPException(409, "the mask this correction was painted on is missing; upload it at full size") from None
            if base.shape != (height, width):
                base = cv2.resize(base, (width, height), interpolation=cv2.INTER_NEAREST)
            mask = imgs.merge_preview_correction(base, mask)
        key = validate_key(f"corrections/{task.batch}/{task.image_id}/{user.name}-{uuid.uuid4().hex[:8]}.png")
        objects.put_bytes(key, encode_png(mask), "image/png")
        return record(task, user, "correct", modes, note, seconds, request_id, corrected_key=key)

    @app.get("/api/admin/stats")
    def api_admin_stats(user: User = Depends(admin_user)):
        return admin_stats(store)

    # -- images ------------------------------------------------------------------------------

    @app.get("/img/{task_id}/{kind}")
    def image(task_id: int, kind: str, user: User = Depends(current_user)):
        if kind not in imgs.RENDITION_KINDS:
            raise HTTPException(404, "not found")
        task = owned_task(task_id, user)
        if kind == "corrected":
            mine = [e for e in store.task_events(task.id) if e.reviewer == user.name and e.corrected_mask_key]
            if not mine:
                raise HTTPException(404, "no correction yet")
            key, render = mine[-1].corrected_mask_key, imgs.mask_rendition
        else:
            key = {"original": task.image_key, "composite": task.composite_key or task.image_key, "mask": task.mask_key}[kind]
            render = imgs.mask_rendition if kind == "mask" else imgs.rgb_rendition
        try:
            key = validate_key(key)
        except InvalidKeyError:
            raise HTTPException(404, "not found") from None
        size = imgs.display_size(*task_size(task), display_side)
        cache_key = (key, size)
        body = cache.get(cache_key)
        if body is None:
            try:
                body = render(objects.get_bytes(key), key, size)
            except (FileNotFoundError, KeyError):
                raise HTTPException(404, "image missing from the object store") from None
            except ImageRejected:
                raise HTTPException(422, "the stored image cannot be decoded") from None
            cache.put(cache_key, body)
        media = "image/png" if render is imgs.mask_rendition else "image/jpeg"
        return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=300"})

    return app


def app_from_env() -> FastAPI:
    """The app on the environment's stores (HITL_REVIEW_DB_URL, HITL_OBJECT_ROOT / HITL_S3_*, HITL_POLICY),
    for ``uvicorn --factory hitl_assets.review_app.app:app_from_env``."""
    from hitl_assets.review_app.security import load_secret
    from resources.policy import TolerancePolicy

    store = ReviewStore.from_env()
    store.engine  # migrate before serving
    return create_app(store, ObjectStore.from_env(), TolerancePolicy.from_env().load(), load_secret())
