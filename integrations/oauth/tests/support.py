"""Fixtures and helpers of the connection tests: the providers' apps pointed at the local peers,
member-page sessions, and ``connect`` (Connect → the peer's consent → the callback)."""

import urllib.parse
from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import User

BASE_URL = "https://potaflow.example"  # as behind a TLS-terminating proxy: never the request's host


@pytest.fixture
def slack_app(settings, allow_loopback, fake_slack):
    """Slack's app credentials set by staff, Slack's URLs at the peer."""
    for name, value in fake_slack.oauth_settings.items():
        setattr(settings, name, value)
    settings.POTAFLOW_BASE_URL = BASE_URL
    return fake_slack


@pytest.fixture
def google_app(settings, allow_loopback, fake_google):
    for name, value in fake_google.oauth_urls.items():
        setattr(settings, name, value)
    settings.POTAFLOW_BASE_URL = BASE_URL
    return fake_google


@pytest.fixture
def oauth_app(settings, allow_loopback, fake_oauth):
    settings.POTAFLOW_BASE_URL = BASE_URL
    return fake_oauth


@pytest.fixture
def pages(world) -> Callable[[str], Client]:
    """A signed-in member-page session of a persona (``pages("admin")``)."""

    def session(persona: str) -> Client:
        client = Client()
        client.force_login(world.users[persona])
        return client

    return session


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def callback_path(callback_url: str) -> str:
    """The path and query of the provider's redirect back, for the test client."""
    assert callback_url.startswith(f"{BASE_URL}/oauth/callback/?"), callback_url
    parts = urllib.parse.urlsplit(callback_url)
    return f"{parts.path}?{parts.query}"


def start(client: Client, url: str) -> str:
    """Follow a Connect link: the provider's consent URL it redirects to."""
    response = client.get(url)
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def connect(client: Client, url: str, peer, *, allow: bool = True) -> tuple[str, object]:
    """Connect → consent (allowed or denied) at the peer → callback; (consent URL, callback response)."""
    consent = start(client, url)
    back = peer.approve(consent, allow=allow)
    return consent, client.get(callback_path(back), follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []
