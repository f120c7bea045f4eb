"""The bulk import's shortcuts give what the rules give when asked row by row: a row template
stamps exactly the rows its builder returns (and a builder that uses an id beyond the id fields is
called for every row); the first step's time depends on the enrollment id only modulo the spread
period; the cheaper keyed hash is the same HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from patient_drip.contacts.blocks import BlockReason, block_rows
from patient_drip.contacts.changes import created_rows
from patient_drip.contacts.consent import ConsentGrant, Wording, grant_rows
from patient_drip.contacts.enrollment import (
    CRISIS_PAUSE_REASON,
    deferred_rows,
    enrolled_rows,
    first_step,
    first_step_period,
    pause_rows,
)
from patient_drip.contacts.fields import address_hash
from patient_drip.contacts.records import Row, event_row
from patient_drip.contacts.row_templates import RowBatch, RowTemplates
from patient_drip.content.campaign import Campaign
from patient_drip.models import Channel, ConsentMethod, EventKind
from support.builders import START, make_settings

NOW = START


def _expected(rows: list[Row]) -> RowBatch:
    batch = RowBatch()
    batch.add(rows)
    return batch


def _campaign() -> Campaign:
    from patient_drip.content.campaign import load_campaigns

    return load_campaigns(make_settings("sqlite://").campaigns_dir)["ketamine-consult"]


BUILDERS: dict[str, Any] = {
    "created": lambda c, e: created_rows(c, "fair", NOW, "cli:test"),
    "blocked": lambda c, e: block_rows(c, Channel.EMAIL, BlockReason.SUPPRESSED, "hard bounce", NOW, "cli:test"),
    "granted, opt-out lifted": lambda c, e: grant_rows(
        c, ConsentGrant(Channel.SMS, ConsentMethod.IMPORT, note="from the file"), Wording("sms-v1", "Reply STOP"),
        BlockReason.OPTED_OUT, NOW, "cli:test"),
    "enrolled": lambda c, e: enrolled_rows(c, e, "ketamine-consult", NOW, "cli:test"),
    "paused": lambda c, e: pause_rows(True, c, e, "ketamine-consult", NOW, "system:crisis",
                                      reason=CRISIS_PAUSE_REASON, inbound_id=7),
    "nothing": lambda c, e: [],
    # The id in a detail: the probes tell, and the builder is called for every row.
    "id in a detail": lambda c, e: [event_row(EventKind.ENROLLED, NOW, c, e, note=f"contact #{c}")],
    "id in a text": lambda c, e: grant_rows(c, ConsentGrant(Channel.EMAIL, ConsentMethod.IMPORT, note=f"row of {c}"),
                                            Wording("email-v1", "Yes"), None, NOW, "cli:test"),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_template_stamps_exactly_the_rows_its_builder_returns(name):
    build = BUILDERS[name]
    templates, batch = RowTemplates(), RowBatch()
    ids = [(1, 10), (2, 11), (123456789, 987654321), (5, None)]
    for contact_id, enrollment_id in ids:
        templates.add(batch, name, build, contact_id, enrollment_id)
    expected = _expected([row for contact_id, enrollment_id in ids for row in build(contact_id, enrollment_id)])
    assert batch == expected


def test_deferred_rows_come_from_the_template_with_their_own_time_and_zone():
    campaign = _campaign()
    night = datetime(2026, 3, 2, 4, 0, tzinfo=timezone.utc)
    templates, batch, rows = RowTemplates(), RowBatch(), []
    for enrollment_id in range(1, 60):
        zone = "America/Chicago" if enrollment_id % 2 else "Pacific/Honolulu"
        scheduled = first_step(campaign, zone, night, enrollment_id, phone="+13125550101")
        build = (lambda s, z: lambda c, e: deferred_rows(c, e, campaign, s, z, night))(scheduled, zone)
        templates.add(batch, (scheduled, zone), build, enrollment_id + 100, enrollment_id)
        rows += build(enrollment_id + 100, enrollment_id)
    assert rows and batch == _expected(rows)


@pytest.mark.parametrize("phone", ["+13125550101", "+13055550101", None])
@pytest.mark.parametrize("zone", ["America/Chicago", "America/New_York", "Pacific/Honolulu", "Europe/London"])
def test_the_first_step_depends_on_the_enrollment_id_only_modulo_its_period(phone, zone):
    campaign = _campaign()
    period = first_step_period(campaign, phone=phone)
    assert period > 1  # the campaign spreads a crowd waiting for the window
    rng = random.Random(f"{phone}{zone}")
    moved = 0
    for hour in range(0, 24, 3):
        now = START.replace(hour=hour, minute=rng.randrange(60))
        for _ in range(20):
            enrollment_id = rng.randrange(1, 10**9)
            scheduled = first_step(campaign, zone, now, enrollment_id, phone=phone)
            assert scheduled == first_step(campaign, zone, now, enrollment_id % period, phone=phone)
            assert scheduled == first_step(campaign, zone, now, enrollment_id % period + 7 * period, phone=phone)
            moved += scheduled is not None and scheduled.moved_because is not None
    assert moved  # some of these times were outside the window: the spread was exercised
    assert first_step(campaign, zone, START + timedelta(hours=10), 1, phone=phone) is not None


@pytest.mark.parametrize("secret", ["k", "x" * 100, "clé secrète"])
@pytest.mark.parametrize("value", ["+13125550101", "person@example.com", "zoë@exämple.com"])
def test_the_suppression_hash_is_hmac_sha256_of_channel_and_address(secret, value):
    expected = hmac.new(secret.encode(), f"sms:{value}".encode(), hashlib.sha256).hexdigest()
    assert address_hash(secret, "sms", value) == expected
    assert address_hash(secret, "sms", value) == expected  # the cached key is not consumed by use
