"""The campaign page's journey diagram and timing form over HTTP: live counts on each node, a saved
version in the history and the diagram, every problem shown at once, and who may change timing."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from patient_drip.content.campaign_versions import format_delay
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, CampaignVersion
from support.builders import add_contact
from support.experiments import add_people
from support.staff import add_user, sign_in_as

PAGE = "/admin/campaigns/ketamine-consult"


def _signed_in(client, srt, role, clock) -> str:  # type: ignore[no-untyped-def]
    return sign_in_as(client, srt, add_user(srt, role), clock.now)


def _form(srt, csrf: str, note: str = "later is kinder", **changed: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    campaign = srt.campaign("ketamine-consult")
    data: dict[str, object] = {f"delay-{s.id}": format_delay(s.delay) for s in campaign.steps}
    data.update({f"delay-{key.replace('_', '-')}": value for key, value in changed.items()})
    data.update({"enabled": [s.id for s in campaign.steps], "note": note, "csrf_token": csrf,
                 "based_on": str(campaign.version)})
    return data


def _node(html: str, step: str) -> dict[str, str]:
    """A message node's counts (waiting there now, sent); a branch or wait node has `passed` instead."""
    match = re.search(rf'<g class="journey-node[^"]*" id="node-{step}" data-step="{step}" '
                      r'data-waiting="(\d+)" data-(sent|passed)="(\d+)"', html)
    assert match is not None, step
    return {"waiting": match[1], match[2]: match[3]}


def test_the_diagram_counts_who_waits_at_each_step_and_what_each_step_sent(client, srt, clock):
    add_contact(srt, clock.now, email="a@example.com", phone="+13125550142")
    add_contact(srt, clock.now, email="b@example.com", phone="+13125550143")
    _signed_in(client, srt, "marketing", clock)
    before = client.get(PAGE).text
    assert _node(before, "choose-welcome")["waiting"] == "2"  # the journey opens with the interest branch
    assert _node(before, "welcome-email") == {"waiting": "0", "sent": "0"}
    Dispatcher(srt, "w").run_once(clock.now)  # both welcomes go; both wait for day 2's check
    after = client.get(PAGE).text
    assert _node(after, "welcome-email") == {"waiting": "0", "sent": "2"}
    assert _node(after, "welcome-sms")["sent"] == "2"
    assert _node(after, "check-day-2")["waiting"] == "2"
    assert _node(after, "stress-brain-email") == {"waiting": "0", "sent": "0"}
    assert "interest=depression" in after and "otherwise" in after  # the branch's ways out, labelled
    assert '<svg class="journey-svg' in after and "<title>" in after
    assert 'id="exit-booked" data-exit="booked" data-count="0"' in after
    assert "<script" not in after.split('<figure class="journey"')[1].split("</figure>")[0]


def test_marketing_saves_a_new_version_and_sees_it_in_the_history_and_the_diagram(client, srt, clock):
    csrf = _signed_in(client, srt, "marketing", clock)
    response = client.post(f"{PAGE}/timing", data=_form(srt, csrf, stress_brain_email="3d"), follow_redirects=False)
    assert response.status_code == 303 and "timing_saved" in response.headers["location"]
    page = client.get(PAGE).text
    assert 'id="version-in-force">2<' in page
    history = page.split('class="data version-history"')[1]
    assert "later is kinder" in history and "stress-brain-email: 2d → 3d" in history
    assert "3d" in page.split('id="node-stress-brain-email"')[1].split("</g>")[0]  # its new delay on its node
    with srt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "campaign_timing_changed")) == 1


def test_the_form_shows_every_problem_at_once_and_keeps_what_was_typed(client, srt, clock):
    csrf = _signed_in(client, srt, "admin", clock)
    data = _form(srt, csrf, note="", welcome_email="tomorrowish", results_email="-1d")
    data["enabled"] = []
    response = client.post(f"{PAGE}/timing", data=data)
    assert response.status_code == 400
    summary = response.text.split('id="error-summary"')[1].split("</div>")[0]
    assert summary.count("<li>") == 4
    assert "tomorrowish" in summary and "at least one step must stay on" in summary
    assert "say why the timing changes" in summary and "results-email" in summary and "negative" in summary
    assert 'value="tomorrowish"' in response.text
    with srt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CampaignVersion)) == 0


@pytest.mark.parametrize("role", ["staff", "clinician"])
def test_the_front_desk_and_clinicians_may_not_change_timing(client, srt, clock, role):
    csrf = _signed_in(client, srt, role, clock)
    page = client.get(PAGE)
    assert page.status_code == 200 and "journey-svg" in page.text  # they see the journey…
    assert f'action="{PAGE}/timing"' not in page.text  # …but no form
    response = client.post(f"{PAGE}/timing", data=_form(srt, csrf, stress_brain_email="3d"))
    assert response.status_code == 403
    with srt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CampaignVersion)) == 0


def test_the_results_section_shows_each_ab_step_and_the_holdout_with_the_verdict_in_words(client, srt, clock):
    _signed_in(client, srt, "staff", clock)
    assert 'id="results"' not in client.get(PAGE).text  # no variants, nobody in a holdout: no section
    with srt.sessions() as session, session.begin():
        ab = {"campaign": "ketamine-consult", "step": "welcome-email"}
        add_people(session, clock.now, 30, variant="A", **ab)
        add_people(session, clock.now, 25, variant="B", **ab)
        add_people(session, clock.now, 5, variant="B", booked="after", clicked=True, **ab)
        add_people(session, clock.now, 30, campaign="ketamine-consult", holdout=True)
    page = client.get(PAGE).text
    section = page.split('<section id="results"')[1].split("</section>")[0]
    ab_table = section.split('data-step="welcome-email"')[1].split("</table>")[0]
    # 0/30 against 5/30: p = 0.0195 (worked in tests/test_cli.py).
    assert "<caption>A/B test on welcome-email: <strong data-verdict>B books more, 95% confidence</strong></caption>" in ab_table
    assert re.search(r'<th scope="row">A <span class="small">\(control\)</span></th><td class="num">30</td>'
                     r'<td class="num">0</td><td class="num">0</td><td class="num">0.0%</td>', ab_table)
    assert '<th scope="row">B</th><td class="num">30</td><td class="num">5</td><td class="num">5</td><td class="num">16.7%</td>' in ab_table
    # Holdout 0/30 against messaged 5/60: unpooled se = sqrt(0 + (1/12)(11/12)/60) = 0.035681;
    # 0.08333 ± 1.96 * 0.035681 = [+1.3, +15.3] points. Pooled p = 5/90; se = sqrt(5/90 * 85/90 * (1/30 + 1/60))
    # = 0.051220; z = 1.6270; p = 0.104: no clear difference yet.
    holdout = section.split("data-holdout")[1].split("</table>")[0]
    assert "<strong data-verdict>no clear difference yet (p = 0.10)</strong>" in holdout
    assert '<th scope="row">Messaged</th><td class="num">60</td><td class="num">5</td><td class="num">8.3%</td>' in holdout
    assert "Lift: +8.3 percentage points (95% confidence interval +1.3 to +15.3)." in section
    assert "compared with the first" not in section  # only two variants
