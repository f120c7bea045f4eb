"""Attackers who got hold of the database (a copied file, a dump, a backup): no secret in it opens
the staff app or reverses the suppression list, and an erased person leaves nothing in it.

Issue 11, item 6. Run against a live server (`LiveApp`) where the attack is over HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from itsdangerous import URLSafeSerializer
from sqlalchemy import String, Text, delete, select
from twilio.request_validator import RequestValidator

from patient_drip.cli import main
from patient_drip.contacts.blocks import suppress, suppression_reason
from patient_drip.contacts.privacy import forget_person
from patient_drip.content.tokens import LinkTokens
from patient_drip.keys import KEY_CHECK_ROW, key_file_path
from patient_drip.models import (AuditEntry, Base, Channel, Contact, Event, InboundMessage, KeyValue, Message,
                                  Suppression, User, audit)
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.settings import SettingsError
from patient_drip.web.admin.auth import SESSION_COOKIE, SESSION_SALT, issue_session
from support.databases import TEMPLATES
from support.builders import START, VirtualClock, add_contact, make_settings, run_until_done
from support.live import LiveApp, loopback_url
from support.staff import add_user, make_client, runtime_for, sign_in_as

TWILIO_TOKEN = "secrets-twilio-token"
PHONE = "+13125550177"
EMAIL = "quillon.vantreese@example.com"
FIRST_NAME = "Quillon"
EARLY_REPLY = "zebra-quartz before I signed up"
LATER_REPLY = "marmalade-ostrich after signing up"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Runtime, LiveApp, VirtualClock]]:
    """A live server on a SQLite file with no DRIP_SECRET_KEY: the keys come from the key file."""
    url = TEMPLATES.copy_sqlite(tmp_path / "drip.db")  # migrated, never opened by a runtime: no keys yet
    rt = build_runtime(make_settings(url, secret_key=None, public_url=loopback_url(), twilio_auth_token=TWILIO_TOKEN))
    clock = VirtualClock()
    with LiveApp(rt, clock) as app:
        yield rt, app, clock
    rt.close()


def database_strings(rt: Runtime) -> set[str]:
    """Every text value stored in any table: all an attacker with the database could try as a key."""
    found: set[str] = set()
    with rt.sessions() as session:
        for table in Base.metadata.sorted_tables:
            columns = [column for column in table.columns if isinstance(column.type, (String, Text))]
            if columns:
                for row in session.execute(select(*columns)):
                    found.update(value for value in row if isinstance(value, str) and value)
    return found


def _session_serializer(secret: str) -> URLSafeSerializer:
    """How the app signs session cookies (salt and digest are in the code, which is public)."""
    return URLSafeSerializer(secret, salt=SESSION_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def forged_cookie(secret: str, payload: dict[str, object]) -> str:
    """The session cookie `payload` signed with `secret`."""
    return str(_session_serializer(secret).dumps(payload))


def twilio_inbound(app: LiveApp, rt: Runtime, body: str, sid: str) -> httpx.Response:
    params = {"From": PHONE, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "AC1"}
    url = f"{rt.settings.public_url}/webhooks/twilio/sms"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    return httpx.post(f"{app.url}/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})


def test_no_cookie_forged_from_anything_in_the_database_opens_the_staff_app(live):
    rt, app, clock = live
    admin = add_user(rt, "admin", "root@clinic.test")
    with rt.sessions() as session, session.begin():
        # A live session of the admin's (its id is in the database too): the attacker lacks only the key.
        payload = _session_serializer(rt.session_secret).loads(issue_session(rt, session, session.get(User, admin.id),
                                                                             clock.now))
    # The forging method is right: signed with the real session key, the cookie opens /admin/users.
    genuine = forged_cookie(rt.session_secret, payload)
    assert httpx.get(f"{app.url}/admin/users", cookies={SESSION_COOKIE: genuine}).status_code == 200
    candidates = database_strings(rt)
    assert candidates, "the database holds text to try"
    opened = [value[:12] for value in candidates
              if httpx.get(f"{app.url}/admin/users",
                           cookies={SESSION_COOKIE: forged_cookie(value, payload)}).status_code == 200]
    assert opened == []
    with rt.sessions() as session:
        assert not session.scalars(select(KeyValue.key).where(KeyValue.key.in_(["secret_key", "suppression_key"]))).all()


def test_a_suppressed_phone_cannot_be_recovered_from_its_hash_with_the_database_alone(live):
    rt, _app, clock = live
    contact_id = add_contact(rt, clock.now, email=EMAIL, phone=PHONE, first_name=FIRST_NAME)
    forget_person(rt.sessions, rt.engine, rt.suppression_key, contact_id, clock.now, "test")
    with rt.sessions() as session:
        hashes = set(session.scalars(select(Suppression.value_hash)))
    # Every number of the exchange the attacker guesses the phone is in (a real attack tries them all).
    numbers = [f"+1312555{n:04d}" for n in range(100, 200)]

    def recovered(key: str) -> list[str]:
        return [number for number in numbers
                if hmac.new(key.encode(), f"sms:{number}".encode(), hashlib.sha256).hexdigest() in hashes]

    assert recovered(rt.suppression_key) == [PHONE]  # the search finds it with the real key
    keys_to_try = database_strings(rt) | {""}
    assert [key[:12] for key in keys_to_try if recovered(key)] == []
    assert not any(hashlib.sha256(f"sms:{number}".encode()).hexdigest() in hashes for number in numbers)


def test_forget_leaves_no_copy_in_the_sqlite_files_even_of_a_reply_from_before_the_contact_existed(live, monkeypatch):
    rt, app, clock = live
    assert twilio_inbound(app, rt, EARLY_REPLY, "SMearly").status_code == 200  # not a contact yet
    contact_id = add_contact(rt, clock.now, email=EMAIL, phone=PHONE, first_name=FIRST_NAME)
    run_until_done(rt, clock)  # rendered emails and texts that carry the name
    assert twilio_inbound(app, rt, LATER_REPLY, "SMlater").status_code == 200
    with rt.sessions() as session, session.begin():  # an audit row that names the address
        audit(session, "staff@clinic.test", "looked_up", clock.now, query=EMAIL)
    database = Path(rt.settings.database_url.removeprefix("sqlite:///"))
    secrets_in_files = [EMAIL.encode(), PHONE.encode(), PHONE[2:].encode(), FIRST_NAME.encode(),
                        EARLY_REPLY.encode(), LATER_REPLY.encode()]

    def leftovers() -> list[str]:
        found = []
        for file in (database, database.with_name(database.name + "-wal")):
            if file.exists():
                raw = file.read_bytes()
                found += [f"{file.name}: {value.decode()}" for value in secrets_in_files if value in raw]
        return found

    assert len(leftovers()) >= 4  # the test can see them before the erasure

    monkeypatch.setenv("DRIP_DATABASE_URL", rt.settings.database_url)
    monkeypatch.chdir(database.parent)  # no stray .env
    result = CliRunner().invoke(main, ["forget", "--phone", PHONE, "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "vacuumed" in result.output
    assert leftovers() == []  # while the server still runs and holds its connections
    with rt.sessions() as session:
        assert session.get(Contact, contact_id).erased_at is not None
        assert session.scalars(select(InboundMessage.from_number)).all() == [None, None]


@pytest.mark.parametrize("database_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_forget_clears_every_row_the_person_left(database_url, clock):
    rt = build_runtime(make_settings(database_url))
    try:
        with rt.sessions() as session, session.begin():
            session.add(InboundMessage(contact_id=None, from_number=PHONE, body=EARLY_REPLY, classification="other",
                                       received_at=START))
            audit(session, "staff@clinic.test", "looked_up", START, query=EMAIL)
            session.add(Event(contact_id=None, kind="note", detail={"to": PHONE}, occurred_at=START))
        contact_id = add_contact(rt, START, email=EMAIL, phone=PHONE, first_name=FIRST_NAME)
        run_until_done(rt, clock)
        message = forget_person(rt.sessions, rt.engine, rt.suppression_key, contact_id, clock.now, "test")
        assert "vacuum" in message
        with rt.sessions() as session:
            assert session.scalars(select(InboundMessage.body)).all() == [None]
            assert all(row.to_address is None and row.body_text is None for row in session.scalars(select(Message)))
            texts = [json.dumps(row.detail) for row in session.scalars(select(Event))]
            texts += [json.dumps(row.detail) for row in session.scalars(select(AuditEntry))]
            assert not [text for text in texts if EMAIL in text or PHONE in text or FIRST_NAME in text]
            assert suppression_reason(session, rt.suppression_key, Channel.SMS, PHONE)
    finally:
        rt.close()


def test_database_wal_shm_and_key_file_are_readable_by_the_owner_only(live):
    rt, app, clock = live
    add_contact(rt, clock.now, email=EMAIL, phone=PHONE)
    assert httpx.get(f"{app.url}/healthz").status_code == 200
    database = Path(rt.settings.database_url.removeprefix("sqlite:///"))
    files = [database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm"),
             key_file_path(rt.settings)]
    assert all(file is not None and file.exists() for file in files)
    assert {file.name: oct(stat.S_IMODE(file.stat().st_mode)) for file in files} == {
        file.name: "0o600" for file in files}


def test_an_upgrade_moves_the_stored_keys_out_and_keeps_old_links_and_suppressions(tmp_path, clock):
    url = f"sqlite:///{tmp_path / 'drip.db'}"
    old = runtime_for(url)  # an installation as an older version left it: its keys in the kv table
    contact_id = add_contact(old, START, email=EMAIL, phone=PHONE, campaign=None)
    with old.sessions() as session, session.begin():
        session.execute(delete(KeyValue).where(KeyValue.key == KEY_CHECK_ROW))  # older versions kept none
        session.add(KeyValue(key="secret_key", value="old-secret-kept-in-the-database", updated_at=START))
        session.add(KeyValue(key="suppression_key", value="old-suppression-key-in-the-database", updated_at=START))
        suppress(session, "old-suppression-key-in-the-database", Channel.SMS, "+13125550199", "STOP", START)
    old.close()
    old_link = LinkTokens("old-secret-kept-in-the-database").unsubscribe(contact_id)

    rt = build_runtime(make_settings(url, secret_key=None))
    try:
        with rt.sessions() as session:
            assert session.scalars(select(KeyValue.key).where(KeyValue.key.in_(["secret_key", "suppression_key"]))).all() == []
            assert suppression_reason(session, rt.suppression_key, Channel.SMS, "+13125550199") == "STOP"
        key_file = key_file_path(rt.settings)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "old-suppression-key-in-the-database" in key_file.read_text()
        assert rt.tokens.read_unsubscribe(old_link) == (contact_id, None)  # links in sent messages still work
        assert rt.session_secret != "old-secret-kept-in-the-database"
        with make_client(rt, clock) as web:
            admin = add_user(rt, "admin", "root@clinic.test")
            sign_in_as(web, rt, admin, clock.now)  # a genuine session works
            payload = _session_serializer(rt.session_secret).loads(web.cookies.get(SESSION_COOKIE))
            web.cookies.clear()
            web.cookies.set(SESSION_COOKIE, forged_cookie("old-secret-kept-in-the-database", payload),
                            domain="clinic.test", path="/admin")
            assert web.get("/admin/users").status_code != 200
        # A second start (another process) reads the same keys.
        again = build_runtime(make_settings(url, secret_key=None))
        assert (again.session_secret, again.suppression_key) == (rt.session_secret, rt.suppression_key)
        again.close()
    finally:
        rt.close()


def test_a_process_with_other_keys_than_the_database_was_used_with_refuses_to_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'drip.db'}"
    first = runtime_for(url)  # DRIP_SECRET_KEY set, as the server runs
    first.close()
    # `drip …` run from a shell without the server's DRIP_SECRET_KEY: it would get a key file of its
    # own and hash addresses with another suppression key.
    with pytest.raises(SettingsError, match="DRIP_SECRET_KEY_FILE: these are not the keys"):
        build_runtime(make_settings(url, secret_key=None))
    with pytest.raises(SettingsError, match="DRIP_SECRET_KEY: these are not the keys"):
        build_runtime(make_settings(url, secret_key="another-secret-entirely"))
    build_runtime(make_settings(url)).close()  # the same key: fine


@pytest.mark.parametrize("ids", [(1, 2), (7, 10**12), (11111111, 11111111), (2**40, 3)])
def test_link_tokens_are_itsdangerous_own_tokens_and_old_keys_still_read(ids):
    """The signer that keeps its derived key signs exactly as itsdangerous does (links in emails
    already sent keep working), and a token signed with an old key still reads."""
    from itsdangerous import URLSafeSerializer

    from patient_drip.content.tokens import LinkTokens

    contact_id, message_id = ids
    tokens = LinkTokens("the-current-key", fallback_keys=("an-old-key",))
    plain = URLSafeSerializer(["an-old-key", "the-current-key"], salt="drip-book")
    assert tokens.booking(message_id) == plain.dumps(message_id)
    assert tokens.unsubscribe(contact_id, message_id) == URLSafeSerializer(
        ["the-current-key"], salt="drip-unsub").dumps([contact_id, message_id])
    old = URLSafeSerializer("an-old-key", salt="drip-book").dumps(message_id)
    assert tokens.read_booking(old) == message_id
    other = LinkTokens("another-installation")
    assert other.booking(message_id) != tokens.booking(message_id)
