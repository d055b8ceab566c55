"""The review app: a FastAPI web app where reviewers work the queue of escalated images.

``create_app(store, objects, policy, secret)`` builds it; ``hitl review`` serves it with uvicorn.
"""

from hitl_assets.review_app.app import create_app

__all__ = ["create_app"]
