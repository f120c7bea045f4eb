"""Phase 1: the provider SDKs alone — N SMS through `TwilioSender` and N emails through
`SendGridSender` on a thread pool, no database, no rendering (the content is rendered once
beforehand, so the payloads have the real size). The physical limit for `drip send-due` here.

Usage: raw_sdk.py SANDBOX_URL N CONCURRENCY  → prints {"sms_seconds": …, "email_seconds": …}
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor


from patient_drip.content.campaign import load_campaigns  # noqa: E402
from patient_drip.content.context import message_context  # noqa: E402
from patient_drip.content.first_sms import sms_frequency  # noqa: E402
from patient_drip.content.rendering import Renderer  # noqa: E402
from patient_drip.providers.sendgrid import SendGridSender  # noqa: E402
from patient_drip.providers.twilio import TwilioSender  # noqa: E402
from patient_drip.content.tokens import LinkTokens  # noqa: E402
from patient_drip.providers.types import Channel, OutgoingMessage  # noqa: E402
from patient_drip.settings import Settings  # noqa: E402
from support import ROOT, SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN, phone_for  # noqa: E402


def main() -> None:
    url, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    campaign = load_campaigns(ROOT / "campaigns", ROOT / "templates")["ketamine-consult"]
    renderer = Renderer(ROOT / "templates")
    # The context a real send gets (every variable the templates use), from the product's own builder.
    settings = Settings(_env_file=None, public_url="http://127.0.0.1:9", clinic_name="Riverside Wellness",  # type: ignore[call-arg]
                        clinic_address="100 Main Street, Springfield, IL 62701", clinic_phone="+1 555 010 0199")
    tokens = LinkTokens("benchmark-secret-key-for-links")

    def context_for(channel: str) -> dict[str, object]:
        return dict(message_context(settings, tokens, first_name="Maria", contact_id=1, message_id=1,
                                    campaign_name=campaign.name, step_id="x", channel=channel,
                                    sms_frequency=sms_frequency(campaign)))

    context = context_for("email")
    first = {channel: next(s for s in campaign.message_steps if s.channel == channel) for channel in ("email", "sms")}
    email = renderer.render_email(first["email"].template, context)
    sms_text = renderer.render_sms(first["sms"].template, context_for("sms"))
    twilio = TwilioSender(TWILIO_SID, TWILIO_TOKEN, from_number="+15005550006",
                          status_callback_base="http://127.0.0.1:9/webhooks/twilio/status", base_url=url, timeout=30)
    sendgrid = SendGridSender(SENDGRID_KEY, "care@clinic.example", "Riverside Wellness", base_url=url, timeout=30)

    def sms(i: int) -> str:
        return twilio.send(OutgoingMessage(i, Channel.SMS, phone_for(i), sms_text, categories=(campaign.id, "s")))

    def mail(i: int) -> str:
        return sendgrid.send(OutgoingMessage(i, Channel.EMAIL, f"p{i}@bench.example", email.text, subject=email.subject,
                                             html=email.html, unsubscribe_url=str(context["unsubscribe_link"]),
                                             categories=(campaign.id, "e")))

    timings = {}
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(sms, range(min(50, count))))  # warm up connections and imports
        list(pool.map(mail, range(min(50, count))))
        for name, function in (("sms", sms), ("email", mail)):
            started, cpu_started = time.perf_counter(), time.process_time()
            list(pool.map(function, range(1000, 1000 + count)))
            timings[f"{name}_seconds"] = time.perf_counter() - started
            timings[f"{name}_cpu_seconds"] = time.process_time() - cpu_started
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
