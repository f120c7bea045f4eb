"""The campaign page's journey diagram for a journey that branches, waits, loops and ends (our own
campaign file): every kind of node and labelled arrow is drawn, the live counts land on the right
nodes, the table lists every node with its ways out, and the layout stays legible at 25 nodes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from patient_drip.content.campaign import parse_campaign
from patient_drip.dispatch.journey_counts import JourneyCounts
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Contact
from patient_drip.runtime import Runtime
from patient_drip.web.admin.journey import journey_layout
from support.builders import ROOT, add_contact
from support.journeys import BRANCHING, write_campaigns
from support.staff import add_user, make_client, runtime_for, sign_in_as

PAGE = "/admin/campaigns/listening"


@pytest.fixture
def jrt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}", campaigns_dir=write_campaigns(tmp_path / "campaigns", BRANCHING))
    yield runtime
    runtime.close()


def _figure(html: str) -> str:
    return html.split('<figure class="journey"')[1].split("</figure>")[0]


def _attrs(html: str, dom_id: str) -> dict[str, str]:
    match = re.search(rf'<g class="[^"]*" id="{dom_id}"([^>]*)>', html)
    assert match is not None, dom_id
    return dict(re.findall(r'(data-[a-z]+)="([^"]*)"', match[1]))


def test_a_branching_journey_draws_branches_waits_exits_and_the_rebook_path(jrt, clock):
    with make_client(jrt, clock) as client:
        sign_in_as(client, jrt, add_user(jrt, "staff"), clock.now)
        svg = _figure(client.get(PAGE).text)
    assert '<polygon points=' in svg and 'class="journey-node journey-branch" id="node-by-interest"' in svg
    assert 'class="journey-node journey-wait" id="node-wait-click"' in svg
    assert "waits for clicked, up to 3d" in svg
    assert 'id="node-done"' in svg and 'data-exit="done"' in svg  # the exit step is an end node
    assert 'id="journey-rebook"' in svg and "Cancelled a booking" in svg
    for label in ("interest=depression", "interest=bipolar", "otherwise", "clicked", "not clicked in 3d"):
        assert f'class="journey-wait-label">{label}</text>' in svg, label
    # The loop back to the first wait runs up the side, with its label.
    back = re.search(r'<g class="journey-arrow journey-back" data-from="wait-again" data-step="wait-click">(.*?)</g>',
                     svg, re.S)
    assert back is not None and "not clicked in 4d" in back[1]
    assert "<script" not in svg


def test_counts_land_on_the_branch_the_wait_and_the_messages_people_went_through(jrt, clock):
    ids = {interest: add_contact(jrt, clock.now, email=f"{interest}@example.com", phone=f"+1312555014{n}",
                                 campaign="listening")
           for n, interest in enumerate(("depression", "bipolar", "none"))}
    with jrt.sessions() as session, session.begin():
        for interest, contact_id in ids.items():
            session.execute(update(Contact).where(Contact.id == contact_id).values(interest=interest))
    Dispatcher(jrt, "w").run_once(clock.now)  # the branch chooses, the welcomes go, all three wait for a click
    with make_client(jrt, clock) as client:
        sign_in_as(client, jrt, add_user(jrt, "marketing"), clock.now)
        page = client.get(PAGE).text
    svg = _figure(page)
    assert _attrs(svg, "node-by-interest") == {"data-step": "by-interest", "data-waiting": "0", "data-passed": "3"}
    assert _attrs(svg, "node-wait-click") == {"data-step": "wait-click", "data-waiting": "3", "data-passed": "0"}
    assert [_attrs(svg, f"node-welcome-{w}")["data-sent"] for w in ("depression", "bipolar", "unsure")] == ["1", "1", "1"]
    assert _attrs(svg, "node-welcome-sms")["data-sent"] == "3"
    assert "3 waiting · 0 passed" in svg and "0 waiting · 3 passed" in svg
    # The table: every node, with each way out and its label.
    table = page.split('class="data journey-table"')[1].split("</table>")[0]
    assert table.count("<tr id=\"row-") == 13  # 11 steps, the start and the rebook entry
    row = table.split('id="row-node-wait-again"')[1].split("</tr>")[0]
    assert "clicked → help-sms" in row and "not clicked in 4d → wait-click" in row


def test_the_layout_keeps_25_nodes_apart_and_is_quick():
    steps = ["  - id: split\n    branch:\n"
             + "".join(f"      - {{if: {{interest: {i}}}, goto: a{n}}}\n" for n, i in enumerate(("depression", "bipolar", "unsure")))
             + "    otherwise: a3\n"]
    for lane in range(4):
        steps += [f"  - {{id: a{lane}, delay: 0m, channel: email, template: email/01-welcome.html}}\n",
                  f"  - id: w{lane}\n    wait: {{for: clicked, timeout: 2d}}\n    on_event: b{lane}\n    on_timeout: c{lane}\n",
                  f"  - {{id: b{lane}, delay: 0m, channel: sms, template: sms/02-checkin.txt, next: end}}\n",
                  f"  - {{id: c{lane}, delay: 2d, channel: email, template: email/04-results.html, next: "
                  f"{'end' if lane == 3 else 'merge'}}}\n"]
    steps += ["  - {id: merge, delay: 5d, channel: sms, template: sms/03-reminder.txt, next: end}\n",
              "  - {id: end, exit: completed}\n", "  - {id: again, delay: 0m, channel: sms, template: sms/01-welcome.txt}\n",
              "  - id: w-again\n    wait: {for: booked, timeout: 3d}\n    on_timeout: again\n    on_event: end\n"]
    text = "id: big\nname: Big\non_cancel: again\nsteps:\n" + "".join(steps)
    campaign = parse_campaign(text, "big.yaml", ROOT / "templates")
    assert len(campaign.steps) >= 21
    started = time.perf_counter()
    layout = journey_layout(campaign, JourneyCounts())
    assert time.perf_counter() - started < 0.5
    assert len(layout.nodes) == len(campaign.steps) + 2  # the two entries; no finish: every path ends at `end`
    boxes = [(n.x, n.y, n.x + n.width, n.y + n.height) for n in layout.nodes]
    for number, (left, top, right, bottom) in enumerate(boxes):
        for other_left, other_top, other_right, other_bottom in boxes[number + 1:]:
            assert right <= other_left or other_right <= left or bottom <= other_top or other_bottom <= top
        assert 0 <= left and right <= layout.width and 0 <= top and bottom <= layout.height
    assert {a.label for a in layout.arrows} >= {"interest=depression", "otherwise", "clicked", "not clicked in 2d",
                                                "booked", "not booked in 3d"}
    assert any(a.back for a in layout.arrows)  # the rebook wait loops back to its text
