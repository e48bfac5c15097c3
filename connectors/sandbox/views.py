"""Mount the sandboxes inside the hub: ``/sandbox/<slug>/<path>`` -> ``get_sandbox(slug)``.

The hub's ``urls.py`` includes ``connectors.sandbox.urls`` only when ``SANDBOX_ENABLED``; this
view only translates between Django and ``SandboxRequest``/``SandboxResponse``.
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from connectors.sandbox.base import SandboxRequest
from connectors.sandbox.registry import SANDBOXES, get_sandbox

# Set by the WSGI server from the connection; passing them on would corrupt the response.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@csrf_exempt  # provider APIs are called by servers with tokens, never by a browser session
def sandbox_view(request: HttpRequest, slug: str, path: str = "") -> HttpResponse:
    if slug not in SANDBOXES:
        raise Http404(f"no sandbox for {slug!r}")
    try:
        body = request.body
    except RequestDataTooBig:
        # Uploads may exceed DATA_UPLOAD_MAX_MEMORY_SIZE; the fake enforces the provider's own
        # limit. Reading the stream directly skips Django's in-memory cap.
        body = request.read()
    prefix = request.path[: len(request.path) - len(path)] if path else request.path
    sandbox_request = SandboxRequest(
        method=request.method or "GET",
        path="/" + path,
        query={key: request.GET.getlist(key) for key in request.GET},
        headers=dict(request.headers),
        body=body,
        base_url=request.build_absolute_uri(prefix.rstrip("/")),
    )
    answer = get_sandbox(slug).handle(sandbox_request)
    response = HttpResponse(answer.body, status=answer.status)
    for key, value in answer.headers.items():
        if key.lower() not in _HOP_BY_HOP:
            response[key] = value
    return response
