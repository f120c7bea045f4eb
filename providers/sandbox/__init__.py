"""`drip sandbox`: a local stand-in for the slice of Twilio and SendGrid that patient-drip uses.

It speaks the providers' own HTTP APIs, so the official SDKs talk to it unchanged (only their
base URL differs):

* Twilio: ``POST /2010-04-01/Accounts/{sid}/Messages.json`` (form-encoded, Basic auth),
  ``GET`` the same path (list with ``To``, ``From``, ``DateSent>``/``DateSent<``/``DateSent``,
  paging) and ``GET …/Messages/{sid}.json``; Twilio's JSON and error shapes.
* SendGrid: ``POST /v3/mail/send`` (JSON, Bearer auth) answering 202 with ``X-Message-Id``.

It records everything it accepted (``GET /_sandbox/messages``, and ``GET /`` for a person),
injects latency and faults (``/_sandbox/faults`` or the Python API), and calls back like the
real services: Twilio status callbacks signed with ``X-Twilio-Signature`` and SendGrid event
webhooks signed with ECDSA P-256 -- byte-for-byte what the SDKs' validators expect.

Control API (JSON):

==========================================  ======================================================
``GET/POST /_sandbox/config``                read / change credentials, callback targets, delays
``GET/DELETE /_sandbox/messages``            recorded messages (``?provider=&to=&limit=``) / reset
``GET/POST/DELETE /_sandbox/faults``         fault queue, latency, per-recipient rules, random
                                             faults (``{"random": {"twilio": {"rate": 0.3,
                                             "faults": [{"status": 503}], "seed": 1}}}``)
``GET /_sandbox/sendgrid-public-key``        ``{"public_key": <base64 DER SubjectPublicKeyInfo>}``
``POST /_sandbox/twilio/inbound``            ``{"from","to","body"}``: act as a patient texting in
``POST /_sandbox/twilio/status``             ``{"sid","status","error_code"?}``: a status callback
``POST /_sandbox/sendgrid/events``           ``[{event…}]``: sign and post arbitrary events
``GET /_sandbox/callbacks``, ``/_sandbox/stats``  what was called back, counters
==========================================  ======================================================

Built-in recipient rules (Twilio's magic test numbers plus sandbox conventions):

=====================  ========================================================================
``+15005550001``        400, code 21211 (invalid number)
``+15005550002``        400, code 21612 (not reachable by SMS)
``+15005550003``        400, code 21408 (region not enabled)
``+15005550004``        400, code 21610 (recipient replied STOP)
``+15005550009``        400, code 21614 (not a mobile number)
``+15005550030``        accepted, then ``undelivered`` with ErrorCode 30003
``+15005550007``        accepted, then ``failed`` with ErrorCode 30007 (carrier filtered)
``bounce@…``            accepted, then events processed + bounce (type=bounce)
``blocked@…``           accepted, then processed + bounce (type=blocked)
``dropped@…``           accepted, then processed + dropped
``deferred@…``          accepted, then processed + deferred + delivered
``spam@…``              accepted, then processed + delivered + spamreport
``invalid@…``           400 "Does not contain a valid address." on the recipient
=====================  ========================================================================

The package imports nothing else of patient-drip, so it runs on its own. Its modules, from the
bottom up: `wire` (the providers' names, error codes and error bodies), `config` (settings, faults,
recipient rules), `signing`, `records` (what is recorded and how each provider shows it), `state`
(the thread-safe store), `callbacks` (calling back on the event loop), `handlers` (what routes
share), the routes `twilio_api`, `sendgrid_api` and `control`, and `server` (app, thread, CLI body).
"""

from __future__ import annotations

from .config import DEFAULT_RULES, Fault, RecipientRule, SandboxConfig
from .records import sms_segments
from .server import SandboxServer, create_app, run_sandbox
from .signing import SendGridSigner, twilio_signature
from .state import SandboxState

__all__ = [
    "DEFAULT_RULES",
    "Fault",
    "RecipientRule",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "SendGridSigner",
    "create_app",
    "run_sandbox",
    "sms_segments",
    "twilio_signature",
]
