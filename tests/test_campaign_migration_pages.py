"""Moving in-flight people to the version in force, over HTTP: the campaign page offers it when people
are on older versions, the preview comes first, the move needs a note, and only marketing and
admins may do it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from patient_drip.content.campaign_versions import format_delay
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, Enrollment
from patient_drip.runtime import Runtime
from support.builders import add_contact
from support.journeys import LINEAR, write_campaigns
from support.staff import add_user, make_client, runtime_for, sign_in_as

PAGE = "/admin/campaigns/short-course"


@pytest.fixture
def lrt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}", campaigns_dir=write_campaigns(tmp_path / "c", LINEAR))
    yield runtime
    runtime.close()


def _new_version(client, lrt, csrf: str, **changed: str) -> None:  # type: ignore[no-untyped-def]
    campaign = lrt.campaign("short-course")
    data: dict[str, object] = {f"delay-{s.id}": format_delay(s.delay) for s in campaign.steps}
    data.update({f"delay-{key.replace('_', '-')}": value for key, value in changed.items()})
    data.update({"enabled": [s.id for s in campaign.steps], "note": "later", "csrf_token": csrf,
                 "based_on": str(campaign.version)})
    assert client.post(f"{PAGE}/timing", data=data, follow_redirects=False).status_code == 303


def test_marketing_previews_then_moves_people_on_an_older_version(lrt, clock):
    for n in range(2):
        add_contact(lrt, clock.now, email=f"p{n}@example.com", phone=f"+1312555014{n}", campaign="short-course")
    Dispatcher(lrt, "w").run_once(clock.now)
    with make_client(lrt, clock) as client:
        csrf = sign_in_as(client, lrt, add_user(lrt, "marketing"), clock.now)
        _new_version(client, lrt, csrf, middle_email="3d")
        page = client.get(PAGE).text
        assert "Move 2 people to version 2" in page
        preview = client.get(f"{PAGE}/migrate?version=1").text
        assert re.search(r'id="preview-middle-email" data-receive="0" data-skip="0" data-repeat="0" '
                         r'data-earlier="0" data-later="2"', preview)
        assert 'id="people-to-move">2<' in preview
        form = {"from_version": "1", "to_version": "2", "csrf_token": csrf}
        refused = client.post(f"{PAGE}/migrate", data={**form, "note": " "})
        assert refused.status_code == 400 and "say why they move" in refused.text
        moved = client.post(f"{PAGE}/migrate", data={**form, "note": "everyone gets the breather"},
                            follow_redirects=False)
        assert moved.status_code == 303 and "people_moved" in moved.headers["location"]
        after = client.get(PAGE).text
        assert "Move 2 people" not in after and "Everyone in the sequence is on version 2" in after
        again = client.post(f"{PAGE}/migrate", data={**form, "note": "double click"}, follow_redirects=False)
        assert again.status_code == 303  # nobody left to move: nothing happens
    with lrt.sessions() as session:
        assert set(session.scalars(select(Enrollment.campaign_version))) == {2}
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "campaign_version_migrated")) == 1


@pytest.mark.parametrize("role", ["staff", "clinician"])
def test_the_front_desk_and_clinicians_see_who_is_on_older_versions_but_may_not_move_them(lrt, clock, role):
    add_contact(lrt, clock.now, campaign="short-course")
    with make_client(lrt, clock) as client:
        marketing_csrf = sign_in_as(client, lrt, add_user(lrt, "marketing"), clock.now)
        _new_version(client, lrt, marketing_csrf, middle_email="3d")
    with make_client(lrt, clock) as client:
        csrf = sign_in_as(client, lrt, add_user(lrt, role), clock.now)
        page = client.get(PAGE).text
        assert 'id="older-1"' in page and "Move 1 person" not in page
        assert client.get(f"{PAGE}/migrate?version=1").status_code == 403
        response = client.post(f"{PAGE}/migrate", data={"from_version": "1", "to_version": "2", "note": "x",
                                                        "csrf_token": csrf})
        assert response.status_code == 403
    with lrt.sessions() as session:
        assert set(session.scalars(select(Enrollment.campaign_version))) == {None}
