"""The composition root: settings → engine, sessions, campaigns, renderer, tokens, senders.

Each entry point (CLI command, web app, worker) builds one `Runtime` and passes it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parseaddr

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from patient_drip import db
from patient_drip.keys import load_keys
from patient_drip.content.campaign import Campaign, get_campaign, load_campaigns
from patient_drip.content.campaign_versions import CampaignBook, load_book, versions_stamp
from patient_drip.content.rendering import Renderer
from patient_drip.providers.outbox import OutboxSender
from patient_drip.providers.types import Channel, Sender
from patient_drip.content.discretion import brand_problems
from patient_drip.content.guard import load_policy
from patient_drip.production import is_live, placeholder_problems
from patient_drip.settings import Settings, SettingsError
from patient_drip.content.template_store import publication_stamp, published_sources
from patient_drip.content.tokens import LinkTokens


def utcnow() -> datetime:
    """The real clock. Only entry points call this; everything below takes `now`."""
    return datetime.now(timezone.utc)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    campaigns: dict[str, Campaign]
    renderer: Renderer
    tokens: LinkTokens
    suppression_key: str
    # Signs staff session cookies; derived from the master secret for this purpose only (`keys`).
    session_secret: str
    senders: dict[Channel, Sender] = field(default_factory=dict)
    _template_stamp: str = ""
    _versions_stamp: int = -1

    def campaign(self, campaign_id: str) -> Campaign:
        """The campaign as a new enrollment would follow it now (its timing version in force)."""
        return get_campaign(self.campaigns, campaign_id)

    def refresh_campaigns(self) -> None:
        """Load the campaigns' timing versions (`content.campaign_versions`); reloads only when one
        was saved since, so the dispatcher's pass pays one small query."""
        with self.sessions() as session:
            stamp = versions_stamp(session)
            if stamp != self._versions_stamp:
                files = self.campaigns.files if isinstance(self.campaigns, CampaignBook) else self.campaigns
                self.campaigns = load_book(session, files)
                self._versions_stamp = stamp

    def refresh(self) -> None:
        """`refresh_templates` and `refresh_campaigns`: what a dispatch pass or a page that shows
        the live sequence calls first."""
        self.refresh_templates()
        self.refresh_campaigns()

    def refresh_templates(self) -> None:
        """Render with the published template versions; reloads only when a publication changed."""
        with self.sessions() as session:
            stamp = publication_stamp(session)
            if stamp != self._template_stamp:
                self.renderer = Renderer(self.settings.templates_dir, published_sources(session))
                self._template_stamp = stamp

    @property
    def delivery(self) -> str:
        return self.settings.delivery

    def close(self) -> None:
        self.engine.dispose()


def startup_problems(settings: Settings) -> list[str]:
    """What must be fixed before this configuration may render or send messages, each naming its
    variable: the discreet names (`content.discretion.brand_problems`, always) and, with real
    providers, placeholders (`production.placeholder_problems`)."""
    problems = brand_problems(settings, load_policy(settings.policy_dir))
    if is_live(settings):
        problems += placeholder_problems(settings)
    return problems


def require_ready_to_send(settings: Settings) -> None:
    """Raise `SettingsError` listing every `startup_problems` entry. `drip serve`, `drip worker`,
    `drip send-due` and `drip simulate` call it before doing anything else."""
    problems = startup_problems(settings)
    if problems:
        raise SettingsError("refusing to start; fix these settings first:\n  " + "\n  ".join(problems))


def build_senders(settings: Settings) -> dict[Channel, Sender]:
    """One sender per channel: the outbox, or Twilio and SendGrid as configured (`DRIP_DELIVERY`)."""
    if settings.delivery == "outbox":
        return {Channel.EMAIL: OutboxSender(Channel.EMAIL), Channel.SMS: OutboxSender(Channel.SMS)}
    # Imported here: the SDKs (twilio, sendgrid, requests) cost a fifth of a second at start-up,
    # which a command that sends nothing (`drip import`, `build_runtime(senders={})`) never pays.
    from patient_drip.providers.sendgrid import SendGridSender
    from patient_drip.providers.twilio import TwilioSender

    from_email = parseaddr(settings.from_email)[1]
    return {
        Channel.SMS: TwilioSender(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            messaging_service_sid=settings.twilio_messaging_service_sid or None,
            from_number=settings.twilio_from_number or None,
            status_callback_base=f"{settings.public_url}/webhooks/twilio/status",
            base_url=settings.twilio_base_url or None,
            timeout=settings.provider_timeout_seconds,
        ),
        Channel.EMAIL: SendGridSender(
            settings.sendgrid_api_key.get_secret_value(),
            from_email or settings.from_email,
            settings.sender_name,  # the discreet brand unless DRIP_FROM_EMAIL names one
            base_url=settings.sendgrid_base_url or None,
            timeout=settings.provider_timeout_seconds,
        ),
    }


def build_runtime(
    settings: Settings,
    *,
    senders: dict[Channel, Sender] | None = None,
    engine: Engine | None = None,
    now: datetime | None = None,
) -> Runtime:
    """Everything a command needs. The schema must exist (`drip init`)."""
    now = now or utcnow()
    engine = engine or db.make_engine(settings.database_url, pool_size=settings.worker_concurrency + 2)
    sessions = db.make_session_factory(engine)
    campaigns = load_campaigns(settings.campaigns_dir, settings.templates_dir)
    # From DRIP_SECRET_KEY or the key file, never from a table (moved out of it on upgrade).
    keys = load_keys(settings, sessions, now)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        campaigns=campaigns,
        renderer=Renderer(settings.templates_dir),
        tokens=LinkTokens(keys.link_tokens, keys.link_token_fallbacks),
        suppression_key=keys.suppression,
        session_secret=keys.session,
        senders=senders if senders is not None else build_senders(settings),
    )
    runtime.refresh()
    return runtime
