"""The list of every message (issue 14): sent, in the outbox, skipped; filtered by person, channel,
status, step and send date; paged newest first; one audit row per page; front desk only."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, Message
from support.builders import add_contact
from support.staff import add_user, make_client, sign_in_as


def ids_in(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<a href="/admin/messages/(\d+)">', page)]


def test_every_message_is_listed_and_filters_narrow_it(srt, clock):
    alex = add_contact(srt, clock.now, email="alex@example.com", phone="+13125550142", first_name="Alex")
    add_contact(srt, clock.now, email="sam@example.com", phone=None, consent=("email",), first_name="Sam")
    Dispatcher(srt, "w").run_once(clock.now)
    with srt.sessions() as session:
        messages = list(session.scalars(select(Message).order_by(Message.id)))
    assert {(m.channel, m.status) for m in messages} == {("email", "sent"), ("sms", "sent"), ("sms", "skipped")}
    with make_client(srt, clock) as client:
        sign_in_as(client, srt, add_user(srt, "staff"), clock.now)
        everything = client.get("/admin/messages")
        assert everything.status_code == 200
        assert ids_in(everything.text) == [m.id for m in reversed(messages)]  # newest first
        assert "In the outbox" in everything.text and "Skipped (not sent)" in everything.text
        assert ">sent<" not in everything.text and "welcome-sms" not in everything.text.split('id="messages"')[1]

        def only(query: str) -> set[int]:
            response = client.get(f"/admin/messages?{query}")
            assert response.status_code == 200
            return set(ids_in(response.text))

        assert only("channel=sms") == {m.id for m in messages if m.channel == "sms"}
        assert only("status=skipped") == {m.id for m in messages if m.status == "skipped"}
        assert only("step=welcome-email") == {m.id for m in messages if m.step_id == "welcome-email"}
        assert only("box=outbox") == {m.id for m in messages if m.provider == "outbox"}
        assert only("q=alex%40") == {m.id for m in messages if m.contact_id == alex}
        today = clock.now.date()
        assert only(f"from={today}&to={today}") == {m.id for m in messages if m.sent_at is not None}
        assert only(f"to={today - timedelta(days=1)}") == set()
        # One audit row per page, with how many it listed and the filter.
        with srt.sessions() as session:
            rows = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "messages_listed")
                                        .order_by(AuditEntry.id)))
        assert rows[0].detail == {"rows": len(messages)}
        assert rows[1].detail == {"rows": sum(m.channel == "sms" for m in messages), "what": "channel=sms"}


def test_messages_page_by_id_and_only_staff_may_list_them(srt, clock):
    for n in range(30):
        add_contact(srt, clock.now, email=f"p{n}@example.com", phone=None, consent=("email",), first_name=f"P{n}")
    Dispatcher(srt, "w").run_once(clock.now)
    with make_client(srt, clock) as client:
        sign_in_as(client, srt, add_user(srt, "staff"), clock.now)
        first = client.get("/admin/messages")
        ids = ids_in(first.text)
        assert len(ids) == 50 and ids == sorted(ids, reverse=True)
        older = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
        rest = ids_in(client.get(older).text)
        assert rest and max(rest) < min(ids) and "offset" not in older
    with make_client(srt, clock) as client:
        sign_in_as(client, srt, add_user(srt, "marketing"), clock.now)
        assert client.get("/admin/messages").status_code == 403
