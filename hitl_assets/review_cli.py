"""``hitl review`` (serve the review app) and ``hitl user add`` (accounts), registered in ``hitl_assets.cli``."""

from __future__ import annotations

import sys

import click


@click.command("review")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port to listen on.")
@click.option("--secure-cookies/--no-secure-cookies", default=None, help="Mark session cookies Secure (default: when the request came over HTTPS).")
@click.option("--forwarded-allow-ips", default="", help="Proxies whose X-Forwarded-Proto is trusted (uvicorn's option), e.g. behind a TLS proxy.")
def review(host: str, port: int, secure_cookies: bool | None, forwarded_allow_ips: str) -> None:
    """Serve the review app on the pipeline's review store and object store (environment configuration).

    The session signing key is HITL_REVIEW_SECRET, or a generated one kept in HITL_HOME/review_secret (0600).
    """
    from hitl_assets.cli import prepare_environment

    prepare_environment()
    import uvicorn

    from hitl_assets.review_app.app import create_app
    from hitl_assets.review_app.security import load_secret
    from resources import ObjectStore, ReviewStore, TolerancePolicy

    store = ReviewStore.from_env()
    objects = ObjectStore.from_env()
    store.engine  # migrate the schema before the first request
    app = create_app(store, objects, TolerancePolicy.from_env().load(), load_secret(), secure_cookies=secure_cookies)
    if not store.users():
        click.echo("no accounts yet: create one with `hitl user add NAME --role admin` (password on standard input)", err=True)
    click.echo(f"review app on http://{host}:{port}  (review store {store.describe()}, objects {objects.describe()})")
    uvicorn.run(
        app, host=host, port=port, log_level="info",
        proxy_headers=bool(forwarded_allow_ips), forwarded_allow_ips=forwarded_allow_ips or None,
    )


@click.group("user")
def user() -> None:
    """Review app accounts."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["reviewer", "admin"]), default="reviewer", show_default=True)
@click.option("--update", is_flag=True, help="Change an existing account's role and password.")
def user_add(name: str, role: str, update: bool) -> None:
    """Create an account; the password is read from standard input (first line), never from the command line."""
    from hitl_assets.cli import prepare_environment

    prepare_environment()
    from hitl_assets.review_app.security import hash_password
    from resources import ReviewStore
    from resources.review_store import ReviewStoreError

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        hashed = hash_password(password)
        ReviewStore.from_env().add_user(name, role, hashed, replace=update)
    except (ValueError, ReviewStoreError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'updated' if update else 'created'} {role} {name}")


@user.command("list")
def user_list() -> None:
    """Accounts and their roles."""
    from hitl_assets.cli import prepare_environment

    prepare_environment()
    from resources import ReviewStore

    for account in ReviewStore.from_env().users():
        click.echo(f"{account.name}\t{account.role}\t{account.created_at:%Y-%m-%d}")
