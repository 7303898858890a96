"""Accounts in the browser, with the real worker sending the mail (file backend, read back here):
sign up → confirm the address → sign in; reset a password; invite by e-mail → accept → land as viewer."""

import shutil

import pytest

from accounts.models import Membership, Organization, Role, User
from testing.mailbox import link_path, wait_for_mail
from testing.worker import mail_folder

from .test_builder import fits, keep, labelled

PASSWORD = "correct-horse-battery-42"
NEW_PASSWORD = "a-brand-new-staple-43"


@pytest.fixture
def mailbox(celery_worker, settings):
    folder = mail_folder()
    shutil.rmtree(folder, ignore_errors=True)
    # The live server describes the worker's backend (pytest-django gave this process locmem).
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(folder)
    return folder


def sign_in(page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/app/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_sign_up_confirm_the_address_then_sign_in(page, live_server, mailbox, shot):
    base = live_server.url
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/app/login/")
    page.get_by_role("link", name="Create one").click()
    page.wait_for_url("**/app/signup/")
    page.get_by_label("E-mail").fill("zoe@example.com")
    page.get_by_label("Password").fill("zoe")  # too short and too like the address: refused, in words
    page.get_by_label("Organization name").fill("Zoe's Shop")
    page.get_by_role("button", name="Create account").click()
    assert "too short" in page.locator("#id_password_error").inner_text()
    labelled(page)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_selector("#pf-mail-sent")
    # make run has no mail server: the page says where the message went.
    assert str(mailbox) in page.locator("#pf-mail-where").inner_text()
    fits(page)
    keep(shot(page, "signup-mail-sent"), "signup-mail-sent")

    # Not before the address is confirmed, and the page says why.
    sign_in(page, base, "zoe@example.com")
    assert "Confirm your e-mail address first" in page.locator("#pf-login-error").inner_text()

    message = wait_for_mail(mailbox, "zoe@example.com", subject="Confirm your e-mail")
    page.goto(base + link_path(message)[:-3] + "xx/")  # a mangled link confirms nothing
    assert page.locator("#pf-verified").get_attribute("data-verified") == "false"
    page.goto(base + link_path(message))
    assert page.locator("#pf-verified").get_attribute("data-verified") == "true"

    sign_in(page, base, "zoe@example.com")
    page.wait_for_url(f"{base}/app/workflows/**")
    assert "Zoe's Shop" in page.locator(".pf-org-name").inner_text()
    assert page.locator(".pf-role").inner_text() == "Owner"

    # Signing up again with the address changes nothing and tells the owner by mail (the page is the same).
    page.context.clear_cookies()
    page.goto(f"{base}/app/signup/")
    page.get_by_label("E-mail").fill("ZOE@example.com")
    page.get_by_label("Password").fill("another-horse-battery-44")
    page.get_by_label("Organization name").fill("Other")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_selector("#pf-mail-sent")
    notice = wait_for_mail(mailbox, "zoe@example.com", subject="already have")
    assert "/app/password-reset/" in notice.get_content() if not notice.is_multipart() else True
    assert Organization.objects.filter(name="Other").count() == 0


def test_reset_a_forgotten_password(page, live_server, mailbox, shot):
    base = live_server.url
    User.objects.create_user(email="yann@example.com", password=PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/app/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("E-mail").fill("yann@example.com")
    page.get_by_role("button", name="Send the link").click()
    page.wait_for_selector("#pf-mail-sent")

    message = wait_for_mail(mailbox, "yann@example.com", subject="Reset your")
    page.goto(base + link_path(message))
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("The same again").fill(NEW_PASSWORD)
    fits(page)
    shot(page, "password-reset-confirm")
    page.get_by_role("button", name="Change my password").click()
    page.wait_for_url(f"{base}/app/login/")
    assert "password was changed" in page.locator(".pf-messages").inner_text()
    sign_in(page, base, "yann@example.com", NEW_PASSWORD)
    page.wait_for_url(f"{base}/app/**")
    page.goto(base + link_path(message))  # used once
    assert page.locator("h1").inner_text() == "This link does not work"


def test_invite_a_colleague_who_accepts_and_lands_as_viewer(page, browser, live_server, mailbox, shot):
    base = live_server.url
    owner = User.objects.create_user(email="olga@example.com", password=PASSWORD)
    acme = Organization.objects.create(name="Acme", slug="acme")
    Membership.objects.create(user=owner, organization=acme, role=Role.OWNER)
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, base, "olga@example.com")
    page.wait_for_url(f"{base}/app/workflows/**")
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Invite by e-mail").fill("victor@example.com")
    page.get_by_label("as", exact=True).select_option("viewer")
    page.get_by_role("button", name="Send invitation").click()
    assert "Invitation sent to victor@example.com" in page.locator(".pf-messages").inner_text()
    assert page.locator('[data-invitation="victor@example.com"]').is_visible()
    fits(page)
    labelled(page)
    keep(shot(page, "members-invitations"), "members-invitations")

    message = wait_for_mail(mailbox, "victor@example.com", subject="invites you")
    # Victor, in a browser of his own, has no account yet: the invitation creates it.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base)
    guest = context.new_page()
    guest.goto(base + link_path(message))
    assert "Join Acme" in guest.locator("h1").inner_text()
    guest.get_by_label("Your name").fill("Victor")
    guest.get_by_label("Choose a password").fill(PASSWORD)
    shot(guest, "invitation-accept")
    guest.get_by_role("button", name="Create my account and join").click()
    guest.wait_for_url(f"{base}/app/workflows/**")
    assert guest.locator(".pf-role").inner_text() == "Viewer"
    assert "joined as viewer" in guest.locator(".pf-messages").inner_text()
    assert guest.locator("#pf-new-workflow").count() == 0  # a viewer builds nothing
    # The link was used up.
    guest.context.clear_cookies()
    guest.goto(base + link_path(message))
    assert "already used" in guest.locator("#pf-invitation-problem").inner_text()
    context.close()
    assert Membership.objects.get(user__email="victor@example.com").role == Role.VIEWER
