"""`drip`: the command line. Thin: it parses options, builds a runtime, calls a service, prints.

Errors a user can cause print one clear line and exit non-zero; a stack trace is a bug.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import click

from patient_drip import db
from patient_drip.content.campaign import load_campaigns
from patient_drip.content.journey_types import INTERESTS
from patient_drip.content.languages import LANGUAGES
from patient_drip.contacts.changes import ContactNotFound, lookup_contact, parse_contact_input, upsert_contact
from patient_drip.contacts.consent import ConsentGrant, grant_consent, load_wording
from patient_drip.contacts.csv_safe import csv_writer
from patient_drip.contacts.enrollment import (
    enroll as enroll_contact,
    unsubscribe as unsubscribe_contact,
)
from patient_drip.contacts.bookings import mark_booked
from patient_drip.contacts.fields import FieldError, ZoneSource
from patient_drip.logs import configure_logging
from patient_drip.models import Channel, ConsentMethod
from patient_drip.runtime import require_ready_to_send, utcnow
from patient_drip.settings import load_settings
from patient_drip.content.template_store import sync_from_files
from patient_drip.cli_support import CLI_ACTOR, UserError, friendly, in_force_or_file, runtime
from patient_drip.cli_users import users

@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option("0.1.0", prog_name="drip")
def main() -> None:
    """patient-drip: email and SMS follow-up for consultation requests.

    Settings come from environment variables (and a .env file); see README.md.
    """


# -- setup ---------------------------------------------------------------------------------------


@main.command()
@click.option("--admin-email", envvar="DRIP_ADMIN_EMAIL", help="Email of the first admin user.")
@click.option("--admin-password", envvar="DRIP_ADMIN_PASSWORD", help="Password of the first admin (at least 12 characters, not a common or breached password).")
@friendly
def init(admin_email: str | None, admin_password: str | None) -> None:
    """Create or upgrade the schema, check campaigns and templates, create the first admin."""
    from patient_drip.accounts.users import Role, create_user, generate_password, has_admin
    from patient_drip.content.claim_library import seed_library

    settings = load_settings()
    configure_logging(settings, quiet=True)
    db.upgrade(settings.database_url)
    click.echo(f"schema up to date ({_describe_db(settings.database_url)})")
    with runtime(settings) as rt:
        click.echo(f"campaigns: {', '.join(f'{c.id} ({len(c.steps)} steps)' for c in rt.campaigns.values())}")
        now = utcnow()
        with rt.sessions() as session, session.begin():
            synced = sync_from_files(session, settings.templates_dir, now, CLI_ACTOR)
            click.echo(f"templates: {len(synced.initial)} imported, {len(synced.drafts)} changed file(s) saved as "
                       f"drafts awaiting clinician approval, {synced.unchanged} unchanged")
            seeded = seed_library(session, settings.policy_dir, now)
            click.echo(f"claims library: {seeded} approved claims loaded" if seeded else "claims library: in place")
            if admin_email:
                password = admin_password or generate_password()
                create_user(session, admin_email, password, Role.ADMIN, now, CLI_ACTOR, name="Administrator")
                click.echo(f"admin created: {admin_email}" + ("" if admin_password else f" password: {password}"))
            elif not has_admin(session):
                password = generate_password()
                create_user(session, "admin@example.com", password, Role.ADMIN, now, CLI_ACTOR, name="Administrator")
                click.echo(f"first admin created: admin@example.com  password: {password}")
                click.echo("  (shown once; change it on the Account page or with `drip users reset-password admin@example.com`)")
            else:
                click.echo("admin user exists (add more with `drip users add`)")


def _describe_db(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="DRIP_HOST", help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, envvar="DRIP_PORT", help="Port to listen on.")
@click.option("--no-scheduler", is_flag=True, help="Serve HTTP only; run `drip worker` separately.")
@friendly
def serve(host: str, port: int, no_scheduler: bool) -> None:
    """Staff UI, public endpoints and (unless --no-scheduler) the dispatcher, in one process."""
    import uvicorn

    from patient_drip.scheduler import start_background
    from patient_drip.web.app import create_app

    settings = load_settings()
    require_ready_to_send(settings)
    configure_logging(settings)
    with runtime(settings) as rt:
        scheduler = None if no_scheduler else start_background(rt, worker_id=_worker_id("serve"))
        click.echo(f"patient-drip on http://{host}:{port}  (consultation form: http://{host}:{port}/consult, "
                   f"staff: http://{host}:{port}/admin, delivery: {settings.delivery})")
        try:
            uvicorn.run(create_app(rt), host=host, port=port, log_level="warning", proxy_headers=True)
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=True)


def _worker_id(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


@main.command()
@click.option("--processes", type=click.IntRange(min=1), envvar="DRIP_WORKER_PROCESSES",
              help="Dispatcher processes to run under one supervisor (default: one per CPU core; "
                   "1 on SQLite, which has one writer). 1 runs the dispatcher in this process.")
@friendly
def worker(processes: int | None) -> None:
    """Run the dispatcher and its housekeeping alone (run several against PostgreSQL)."""
    from patient_drip.scheduler import run_blocking
    from patient_drip.supervisor import Supervisor, watch_parent

    settings = load_settings()
    require_ready_to_send(settings)
    configure_logging(settings)
    count = processes or os.cpu_count() or 1
    if count > 1 and settings.database_url.startswith("sqlite"):
        click.echo(f"SQLite has one writer: running 1 dispatcher process, not {count} (use PostgreSQL for more)")
        count = 1
    if count > 1:
        click.echo(f"worker supervisor: {count} dispatcher processes ({settings.delivery}, "
                   f"{_describe_db(settings.database_url)}); Ctrl-C or SIGTERM stops them all")
        sys.exit(Supervisor(count).run())
    watch_parent()  # a child of a supervisor stops when the supervisor is gone
    with runtime(settings) as rt:
        worker_id = _worker_id("worker")
        run_blocking(rt, worker_id, announce=lambda: click.echo(
            f"worker {worker_id} dispatching every {settings.dispatch_interval_seconds:g}s "
            f"({settings.delivery}, {_describe_db(settings.database_url)}); Ctrl-C to stop"))


@main.command("send-due")
@friendly
def send_due() -> None:
    """One dispatch pass of everything due now, then exit with a summary."""
    from patient_drip.dispatch.pipeline import Dispatcher

    settings = load_settings()
    require_ready_to_send(settings)
    configure_logging(settings, quiet=True)
    with runtime(settings) as rt:
        summary = Dispatcher(rt, _worker_id("send-due")).run_once(utcnow())
        click.echo(f"send-due: {summary.line()}")


# -- contacts ------------------------------------------------------------------------------------


def _consent_channels(value: str | None) -> list[Channel]:
    if not value:
        return []
    channels = []
    for part in value.split(","):
        name = part.strip().lower()
        if name not in ("email", "sms"):
            raise FieldError("--consent", f"{part!r} is not a channel; use email, sms or email,sms")
        channels.append(Channel(name))
    return channels


@main.command()
@click.option("--campaign", "campaign_id", required=True, help="Campaign id, e.g. ketamine-consult.")
@click.option("--email", help="Email address.")
@click.option("--phone", help="Mobile number (E.164 or a US number with area code).")
@click.option("--first-name", default="", help="First name.")
@click.option("--last-name", default="", help="Last name.")
@click.option("--timezone", "tz", default="", help="IANA time zone; default: from the phone number, else the clinic's.")
@click.option("--consent", default="", help="Channels the person agreed to (recorded as staff consent with the "
              "clinic's current consent wording, as the staff UI does): email, sms or email,sms.")
@friendly
def enroll(campaign_id: str, email: str | None, phone: str | None, first_name: str, last_name: str, tz: str,
           consent: str) -> None:
    """Enroll one contact (creating or updating it)."""
    settings = load_settings()
    configure_logging(settings, quiet=True)
    channels = _consent_channels(consent)
    with runtime(settings) as rt:
        campaign = rt.campaign(campaign_id)
        data = parse_contact_input({"email": email, "phone": phone, "first_name": first_name, "last_name": last_name,
                                    "timezone": tz}, settings.clinic_timezone, zone_source=ZoneSource.STAFF, source="cli")
        now = utcnow()
        wording = load_wording(settings.policy_dir)
        with rt.sessions() as session, session.begin():
            contact, created = upsert_contact(session, rt.suppression_key, data, now, CLI_ACTOR)
            for channel in channels:
                grant_consent(session, wording, contact, ConsentGrant(channel, ConsentMethod.STAFF,
                                                                      note="recorded via drip enroll"), now, CLI_ACTOR)
            enrollment = enroll_contact(session, contact, campaign, now, CLI_ACTOR, source="cli")
            click.echo(f"enrolled contact {contact.id} ({'new' if created else 'existing'}) in {campaign.id}; "
                       f"first message due {enrollment.next_due_at:%Y-%m-%d %H:%M} UTC")


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--campaign", "campaign_id", required=True, help="Campaign to enroll every row in.")
@click.option("--errors-csv", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the rejected rows' line numbers and reasons to this CSV file.")
@friendly
def import_(file: Path, campaign_id: str, errors_csv: Path | None) -> None:
    """Bulk enroll a CSV (header: first_name,last_name,email,phone,timezone,consent_email,consent_sms,source)."""
    from patient_drip.contacts.import_rows import ImportFileError, count_data_lines, open_csv
    from patient_drip.contacts.importer import import_csv

    settings = load_settings()
    configure_logging(settings, quiet=True)
    with runtime(settings, sends=False) as rt:
        campaign = rt.campaign(campaign_id)
        total = count_data_lines(file)
        with open_csv(file) as stream, click.progressbar(length=total, label=f"importing {file.name}",
                                                           file=sys.stderr, show_pos=True) as bar:
            try:
                report = import_csv(rt, stream, campaign, utcnow(), CLI_ACTOR, progress=bar.update)
            except ImportFileError as exc:
                raise UserError(f"{file}: {exc}") from None
            except UnicodeDecodeError:
                raise UserError(f"{file}: not UTF-8 text; save the spreadsheet as 'CSV UTF-8'") from None
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for error in report.errors:
        click.echo(f"{file}:{error}", err=True)
    if errors_csv:
        with errors_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv_writer(handle)
            writer.writerow(["line", "field", "error"])
            writer.writerows([e.line, e.field, e.message] for e in report.errors)
    click.echo(f"import: {report.rows} rows, {report.enrolled} enrolled ({report.created} new contacts, "
               f"{report.updated} updated), {report.failed} rejected")
    if report.failed and not report.enrolled:
        sys.exit(1)


@main.command()
@click.option("--email", help="The contact's email address.")
@click.option("--phone", help="The contact's phone number.")
@click.option("--channel", type=click.Choice(["email", "sms", "all"]), default="all", show_default=True,
              help="Which messages to stop.")
@friendly
def unsubscribe(email: str | None, phone: str | None, channel: str) -> None:
    """Stop messages to a contact (recorded as a staff opt-out)."""
    settings = load_settings()
    configure_logging(settings, quiet=True)
    channels = [Channel.EMAIL, Channel.SMS] if channel == "all" else [Channel(channel)]
    with runtime(settings) as rt:
        with rt.sessions() as session, session.begin():
            try:
                contact = lookup_contact(session, email=email, phone=phone)
            except ContactNotFound as exc:
                raise UserError(str(exc)) from None
            changed = unsubscribe_contact(session, rt.campaigns, contact, channels, ConsentMethod.STAFF, utcnow(),
                                          CLI_ACTOR)
        click.echo(f"contact {contact.id}: unsubscribed from {', '.join(changed) if changed else 'nothing new (already unsubscribed)'}")


@main.command()
@click.option("--email", help="The contact's email address.")
@click.option("--phone", help="The contact's phone number.")
@friendly
def booked(email: str | None, phone: str | None) -> None:
    """Mark a contact as booked: every sequence ends with reason `booked`."""
    settings = load_settings()
    configure_logging(settings, quiet=True)
    with runtime(settings) as rt, rt.sessions() as session, session.begin():
        try:
            contact = lookup_contact(session, email=email, phone=phone)
        except ContactNotFound as exc:
            raise UserError(str(exc)) from None
        ended = mark_booked(session, rt.tokens, rt.campaigns, contact, utcnow(), CLI_ACTOR, "cli")
        click.echo(f"contact {contact.id} booked; {ended} sequence{'s' if ended != 1 else ''} ended")


@main.group()
def consent() -> None:
    """Consent records: prove who agreed to what, when and how."""


@consent.command("export")
@click.option("--email", help="The contact's email address.")
@click.option("--phone", help="The contact's phone number.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True,
              help="json (with the current state) or csv (one row per record).")
@friendly
def consent_export(email: str | None, phone: str | None, fmt: str) -> None:
    """Print a contact's full consent history (the export is recorded in the audit log)."""
    from patient_drip.contacts.privacy import consent_history, consent_history_csv, consent_history_json
    from patient_drip.contacts.read_audit import ReadKind, audit_read

    settings = load_settings()
    with runtime(settings) as rt, rt.sessions() as session:
        try:
            contact = lookup_contact(session, email=email, phone=phone)
        except ContactNotFound as exc:
            raise UserError(str(exc)) from None
        history = consent_history(session, contact)
        audit_read(session, CLI_ACTOR, ReadKind.CONSENT_EXPORTED, utcnow(), count=len(history["records"]),
                   contact_id=contact.id, what=f"format={fmt}")
        session.commit()  # recorded before anything is printed
    click.echo(consent_history_json(history) if fmt == "json" else consent_history_csv(history), nl=fmt == "json")


@main.command()
@click.option("--email", help="The contact's email address.")
@click.option("--phone", help="The contact's phone number.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly
def forget(email: str | None, phone: str | None, yes: bool) -> None:
    """Erase a person's personal data; they are never contacted again (kept as a keyed hash)."""
    from patient_drip.contacts.privacy import forget_person

    settings = load_settings()
    with runtime(settings) as rt:
        with rt.sessions() as session:
            try:
                contact = lookup_contact(session, email=email, phone=phone)
            except ContactNotFound as exc:
                raise UserError(str(exc)) from None
            if not yes:
                click.confirm(f"Erase contact {contact.id} ({contact.display_name})? This cannot be undone",
                              abort=True)
        try:
            storage = forget_person(rt.sessions, rt.engine, rt.suppression_key, contact.id, utcnow(), CLI_ACTOR)
        except RuntimeError as exc:  # erased and committed; only the file rewrite is unfinished
            raise UserError(f"contact {contact.id} erased, but {exc}") from None
        click.echo(f"contact {contact.id} erased; their addresses are suppressed; {storage}")


@main.command()
@click.argument("channel", type=click.Choice(["email", "sms"]))
@friendly
def resume(channel: str) -> None:
    """Resume a channel that was paused because the provider refused our credentials."""
    from patient_drip.dispatch.pauses import resume_channel

    settings = load_settings()
    with runtime(settings) as rt, rt.sessions() as session, session.begin():
        reason = resume_channel(session, Channel(channel), utcnow(), CLI_ACTOR)
    if reason is None:
        click.echo(f"{channel} delivery is not paused")
        return
    click.echo(f"{channel} delivery resumed (was paused: {reason})")


# -- content -------------------------------------------------------------------------------------


@main.group()
def templates() -> None:
    """Message templates: check them."""


@templates.command("check")
@friendly
def templates_check() -> None:
    """Validate every campaign and template; prints `file:line: message` per problem."""
    from patient_drip.content.checks import check_all

    settings = load_settings()
    problems, summary = check_all(settings)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        click.echo(f"templates check: {len(problems)} problem{'s' if len(problems) != 1 else ''}", err=True)
        sys.exit(1)
    click.echo(f"templates check: ok ({summary})")


@templates.command("sync")
@friendly
def templates_sync() -> None:
    """Import changed files in templates/ as new drafts (a clinician approves them in the staff UI)."""
    settings = load_settings()
    with runtime(settings) as rt, rt.sessions() as session, session.begin():
        result = sync_from_files(session, settings.templates_dir, utcnow(), CLI_ACTOR)
    for name in result.drafts:
        click.echo(f"draft saved: {name} (awaiting clinician approval)")
    click.echo(f"templates sync: {len(result.initial)} imported, {len(result.drafts)} new draft(s), "
               f"{result.unchanged} unchanged")


# -- staff users: `drip users …` lives in cli_users.py ---------------------------------------------


@main.command()
@click.argument("campaign_id", metavar="CAMPAIGN")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for people, json for tools.")
@click.option("--first-name", default=None,
              help="The sample contact's first name (default Alex); cleaned as a real contact's would be.")
@click.option("--persona", default=None,
              help="A persona defined in the campaign file (`personas:`); the options below change it.")
@click.option("--events", default=None, help='What the person does and when, e.g. "clicked@1d,replied@3d" '
              "(clicked, opened, replied, booked, cancelled, resumed).")
@click.option("--interest", type=click.Choice(list(INTERESTS)), default=None, help="What they asked about on the form.")
@click.option("--language", type=click.Choice(list(LANGUAGES)), default=None, help="The language of the form.")
@click.option("--no-sms", is_flag=True, help="The person did not agree to texts.")
@click.option("--holdout", is_flag=True, help="The person is in the holdout share.")
@friendly
def simulate(campaign_id: str, fmt: str, first_name: str | None, persona: str | None, events: str | None,
             interest: str | None, language: str | None, no_sms: bool, holdout: bool) -> None:
    """Every message CAMPAIGN sends a sample person, in order, with its offset, the journey's path to
    it, its A/B variant and full content. A persona (or --events/--interest/--language) walks the
    journey's branches and waits as that person would."""
    from patient_drip.content.campaign import get_campaign
    from patient_drip.content.simulate import UnknownPersona, as_json, as_text, persona_for, simulate_journey

    settings = load_settings()
    require_ready_to_send(settings)
    campaign = in_force_or_file(settings, get_campaign(load_campaigns(settings.campaigns_dir,
                                                                      settings.templates_dir), campaign_id))
    try:
        who = persona_for(campaign, persona, events=events, interest=interest, language=language, no_sms=no_sms,
                          holdout=holdout)
    except UnknownPersona as exc:
        raise UserError(f"--persona/--events: {exc}") from None
    result = (simulate_journey(settings, campaign, who) if first_name is None
              else simulate_journey(settings, campaign, who, first_name=first_name))
    click.echo(as_json(result.messages) if fmt == "json" else as_text(campaign, result.messages, result.notes, who))


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text table or JSON.")
@friendly
def stats(fmt: str) -> None:
    """The funnel per campaign and step: sent, delivered, clicked, booked; with each A/B step's and the
    holdout's booking rates and verdict."""
    from patient_drip.dispatch.experiment_results import experiment_results
    from patient_drip.dispatch.funnel import campaign_summaries, format_table, summaries_as_dicts

    settings = load_settings()
    with runtime(settings) as rt, rt.sessions() as session:
        summaries = campaign_summaries(session, rt.campaigns)
        results = experiment_results(session, step_order={cid: [s.id for s in c.steps] for cid, c in rt.campaigns.items()})
    click.echo(json.dumps(summaries_as_dicts(summaries, results), indent=2) if fmt == "json"
               else format_table(summaries, results))


# -- providers -----------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback).")
@click.option("--port", default=8025, show_default=True, type=int, help="Port to listen on.")
@click.option("--webhook-base", default=None, help="Where to post callbacks (default: DRIP_PUBLIC_URL).")
@friendly
def sandbox(host: str, port: int, webhook_base: str | None) -> None:
    """Run the local Twilio/SendGrid-compatible provider sandbox."""
    from patient_drip.providers.sandbox import run_sandbox

    settings = load_settings()
    base = (webhook_base or settings.public_url).rstrip("/")
    click.echo(f"provider sandbox on http://{host}:{port}  (inbox: http://{host}:{port}/)\n"
               f"  point drip at it: DRIP_TWILIO_BASE_URL=http://{host}:{port} DRIP_SENDGRID_BASE_URL=http://{host}:{port}\n"
               f"  callbacks go to {base}/webhooks/...")
    run_sandbox(
        host=host, port=port,
        account_sid=settings.twilio_account_sid or None,
        auth_token=settings.twilio_auth_token.get_secret_value() or None,
        sendgrid_api_key=settings.sendgrid_api_key.get_secret_value() or None,
        twilio_inbound_url=f"{base}/webhooks/twilio/sms",
        sendgrid_event_url=f"{base}/webhooks/sendgrid/events",
        announce=None,
    )


def _register_migrate_data() -> None:
    from patient_drip.migrate_data import migrate_data_command

    main.add_command(migrate_data_command)


_register_migrate_data()
main.add_command(users)


if __name__ == "__main__":  # pragma: no cover
    main()
