"""The web dashboard at /ui/: server-rendered pages over the same service
layer as the API (`service.py`, `admin.py`), with its own sign-in.

    sessions.py  who is looking: local mode, or a session from an API key;
                 CSRF tokens on every form
    views.py     what a page shows of a batch: progress, rate, ETA, timeline
    charts.py    inline SVG: progress bars and the throughput chart
    pages.py     the routes, one function a page
    templates/   Jinja2; static/ the stylesheet and the small script that
                 refreshes each page's live part (nothing from a CDN)
"""

from __future__ import annotations

from fastapi import FastAPI

from overnight.ui.pages import dashboard_routes

__all__ = ["mount_dashboard"]


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard under /ui/ of `app`."""
    from starlette.routing import Mount

    app.router.routes.append(Mount("/ui", routes=dashboard_routes()))
