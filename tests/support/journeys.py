"""Small campaign files of our own for the journey diagram and the version-migration tests (the
repository's `campaigns/` is content that changes): a branching journey with waits, exits, a loop
and a rebook path, and a short linear one with its send window open all day."""

from __future__ import annotations

from pathlib import Path

# A branch on interest picks one of three welcomes; they meet at a text; a wait for a click either
# helps (clicked) or nudges (not clicked) and loops back to wait again; a cancelled booking re-enters
# at the rebook text. Templates are the repository's.
BRANCHING = """
id: listening
name: Listening journey
description: A journey that branches, waits and ends.
on_cancel: rebook-sms
steps:
  - id: by-interest
    branch:
      - {if: {interest: depression}, goto: welcome-depression}
      - {if: {interest: bipolar}, goto: welcome-bipolar}
    otherwise: welcome-unsure
  - {id: welcome-depression, delay: 0m, channel: email, template: email/01-welcome.html, next: welcome-sms}
  - {id: welcome-bipolar, delay: 0m, channel: email, template: email/02-stress-brain.html, next: welcome-sms}
  - {id: welcome-unsure, delay: 0m, channel: email, template: email/03-how-it-works.html, next: welcome-sms}
  - {id: welcome-sms, delay: 0m, channel: sms, template: sms/01-welcome.txt}
  - id: wait-click
    wait: {for: clicked, timeout: 3d}
    on_event: help-sms
    on_timeout: nudge-email
  - {id: help-sms, delay: 0m, channel: sms, template: sms/02-checkin.txt, next: done}
  - {id: nudge-email, delay: 3d, channel: email, template: email/04-results.html}
  - id: wait-again
    wait: {for: clicked, timeout: 4d}
    on_event: help-sms
    on_timeout: wait-click
  - {id: rebook-sms, delay: 0m, channel: sms, template: sms/03-reminder.txt, next: done}
  - {id: done, exit: completed}
"""

# Three steps, all day long (no quiet hours for email; texts keep the law's hours).
LINEAR = """
id: short-course
name: Short course
description: Three messages over a week.
send_window: {start: "00:00", end: "24:00", spread_minutes: 0}
steps:
  - {id: hello-email, delay: 0m, channel: email, template: email/01-welcome.html}
  - {id: middle-email, delay: 2d, channel: email, template: email/02-stress-brain.html}
  - {id: checkin-email, delay: 4d, channel: email, template: email/03-how-it-works.html}
  - {id: last-email, delay: 6d, channel: email, template: email/05-consultation.html}
"""


def write_campaigns(directory: Path, *texts: str) -> Path:
    """A campaigns folder holding `texts` (one file each, named by position); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, text in enumerate(texts, start=1):
        (directory / f"campaign-{number}.yaml").write_text(text, encoding="utf-8")
    return directory
