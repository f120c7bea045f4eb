"""Where a booking link (`/b/{token}`) sends the person: the clinic's scheduler, prefilled with what
the scheduler accepts and tagged so a booking can be tied to the exact message.

Every scheduler gets UTM tags naming campaign, step and channel (`utm_source=patient-drip`). Our
tracking value is the booking link's own signed token (it names the message and cannot be forged
or pointed at another person); each scheduler carries it back in its webhook a different way:

| `DRIP_BOOKING_PROVIDER` | prefill | tracking comes back as |
|---|---|---|
| `calendly` | `name`, `email` | `utm_term` (Calendly returns every `utm_*` in the invitee's `tracking`) |
| `calcom` | `name`, `email` | `metadata[drip]` (Cal.com returns booking-page metadata in `payload.metadata`) |
| `generic` | none (we do not know the tool's parameter names) | `drip`, for the tool to pass on |

Pure function; no tracking pixels, nothing loaded from third parties.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PROVIDERS = ("generic", "calendly", "calcom")


def add_query(url: str, params: dict[str, str]) -> str:
    """`url` with `params` added (replacing ones of the same name)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def booking_target(base_url: str, provider: str, *, tracking: str, channel: str, campaign_id: str, step_id: str,
                   name: str = "", email: str | None = None) -> str:
    """The scheduler URL for one message's booking link (see the module docstring)."""
    params = {"utm_source": "patient-drip", "utm_medium": channel, "utm_campaign": campaign_id,
              "utm_content": step_id}
    if provider in ("calendly", "calcom"):
        if name:
            params["name"] = name
        if email:
            params["email"] = email
    if provider == "calendly":
        params["utm_term"] = tracking
    elif provider == "calcom":
        params["metadata[drip]"] = tracking
    else:
        params["drip"] = tracking
    return add_query(base_url, params)
