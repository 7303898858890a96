"""Read the system mail a real worker sent, from the file backend's folder (``testing.worker.mail_folder``).

Django's file backend writes each connection's messages to one ``.log`` file,
messages separated by a line of 79 dashes. ``wait_for_mail`` polls until a
message to ``to`` appears (it never sleeps longer than it must) and returns it parsed.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from email.message import EmailMessage
from pathlib import Path

SEPARATOR = "-" * 79


def messages_in(folder: Path) -> list[EmailMessage]:
    """Every message written to ``folder`` so far, oldest file first."""
    found: list[EmailMessage] = []
    if not folder.exists():
        return found
    for path in sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime_ns):
        for chunk in path.read_bytes().split(SEPARATOR.encode() + b"\n"):
            if chunk.strip():
                found.append(email.message_from_bytes(chunk, policy=email.policy.default))  # type: ignore[arg-type]
    return found


def wait_for_mail(folder: Path, to: str, *, subject: str = "", timeout: float = 30, skip: int = 0) -> EmailMessage:
    """The first message to ``to`` (whose subject contains ``subject``) after ``skip`` earlier ones."""
    deadline = time.monotonic() + timeout
    while True:
        matching = [
            m for m in messages_in(folder) if to.lower() in str(m["To"]).lower() and subject in str(m["Subject"])
        ]
        if len(matching) > skip:
            return matching[skip]
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail to {to} ({subject!r}) in {folder} after {timeout} s")
        time.sleep(0.1)


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def link_path(message: EmailMessage) -> str:
    """The path of the first link in the message (the host is the server's POTAFLOW_BASE_URL)."""
    match = re.search(r"https?://[^/\s]+(/\S+)", body_of(message))
    if match is None:
        raise AssertionError(f"no link in {body_of(message)!r}")
    return match.group(1)
