"""`SandboxState`: the thread-safe store of what the sandbox received and what it was told.

Owns the recorded messages, the log of callbacks attempted, the counters, the fault queues,
latencies and recipient rules, and the live configuration. Shared by the HTTP app (its event-loop
thread) and in-process tests (any thread); knows nothing of HTTP.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .config import DEFAULT_RULES, Fault, RecipientRule, SandboxConfig, check_provider, known_fields
from .signing import SendGridSigner
from .wire import PROVIDERS, Provider

T = TypeVar("T")


class SandboxState:
    """Thread-safe store of what the sandbox received, its faults and its configuration.

    Shared by the HTTP app (event-loop thread) and in-process tests (any thread). Records are
    plain JSON-ready dicts; readers get shallow copies.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._lock = threading.RLock()
        self._config = config or SandboxConfig()
        self.signer = SendGridSigner(self._config.sendgrid_private_key_pem)
        self._messages: list[dict[str, Any]] = []
        self._by_id: dict[str, dict[str, Any]] = {}
        self._faults: dict[Provider, deque[list[Any]]] = {p: deque() for p in PROVIDERS}
        # provider -> (rate, faults to pick from, rng): "fail this share of requests at random".
        self._random_faults: dict[Provider, tuple[float, tuple[Fault, ...], random.Random]] = {}
        self._latency_ms: dict[Provider, int] = {p: 0 for p in PROVIDERS}
        self._rules: list[RecipientRule] = []
        self._callbacks: deque[dict[str, Any]] = deque(maxlen=self._config.max_callback_log)
        self._changed = threading.Condition(self._lock)
        self.stats: Counter[str] = Counter()
        # Set when the server shuts down, so requests hanging on purpose return at once.
        self.stopping = threading.Event()

    # configuration ---------------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        """The configuration in force (replaced whole by `update_config`)."""
        return self._config

    @property
    def public_key(self) -> str:
        """Base64 DER SubjectPublicKeyInfo of the event-signing key (SENDGRID_WEBHOOK_PUBLIC_KEY)."""
        return self.signer.public_key

    def update_config(self, **changes: Any) -> SandboxConfig:
        """Change configuration; unknown keys or bad values raise ValueError."""
        with self._lock:
            config = dataclasses.replace(self._config, **known_fields(SandboxConfig, changes))
            if "sendgrid_private_key_pem" in changes:
                self.signer = SendGridSigner(config.sendgrid_private_key_pem)
            if config.max_callback_log != self._callbacks.maxlen:
                self._callbacks = deque(self._callbacks, maxlen=config.max_callback_log)
            self._config = config
            return config

    # messages --------------------------------------------------------------------------------

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Store a new message record (oldest are trimmed past `max_messages`); return a copy."""
        with self._lock:
            self._messages.append(record)
            self._by_id[record["id"]] = record
            self.stats[f"{record['provider']}_accepted"] += 1
            overflow = len(self._messages) - self._config.max_messages
            if overflow > 0:
                # Trim a tenth at once so a long benchmark does not pay O(n) per message.
                cut = max(overflow, self._config.max_messages // 10)
                for old in self._messages[:cut]:
                    self._by_id.pop(old["id"], None)
                del self._messages[:cut]
            self._changed.notify_all()
            return dict(record)

    def update_message(self, message_id: str, **fields: Any) -> dict[str, Any] | None:
        """Change fields of a recorded message; a copy of it, or None when unknown."""
        with self._lock:
            record = self._by_id.get(message_id)
            if record is None:
                return None
            record.update(fields)
            self._changed.notify_all()
            return dict(record)

    def get_message(self, message_id: str) -> dict[str, Any] | None:
        """A copy of the recorded message `message_id`, or None."""
        with self._lock:
            record = self._by_id.get(message_id)
            return dict(record) if record is not None else None

    def messages(
        self,
        provider: str | None = None,
        to: str | None = None,
        limit: int | None = None,
        direction: str | None = None,
    ) -> list[dict[str, Any]]:
        """Recorded messages, oldest first (the last `limit` when given)."""
        with self._lock:
            found = [
                dict(m)
                for m in self._messages
                if (provider is None or m["provider"] == provider)
                and (to is None or m["to"] == to)
                and (direction is None or m.get("direction") == direction)
            ]
        return found[-limit:] if limit else found

    def reset_messages(self) -> None:
        """Forget messages, the callback log and the counters (faults and config stay)."""
        with self._lock:
            self._messages.clear()
            self._by_id.clear()
            self._callbacks.clear()
            self.stats.clear()

    def wait_for(self, predicate: Callable[[SandboxState], T], timeout: float = 5.0) -> T:
        """Block until `predicate(state)` is truthy and return it; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("sandbox condition not met in time")
            with self._changed:
                self._changed.wait(min(remaining, 0.05))

    # faults ----------------------------------------------------------------------------------

    def add_fault(self, provider: Provider, fault: Fault) -> None:
        """Queue `fault` for the next `fault.times` requests to `provider`."""
        check_provider(provider)
        with self._lock:
            self._faults[provider].append([fault, fault.times])

    def set_random_faults(self, provider: Provider, rate: float, faults: Iterable[Fault],
                          seed: int | None = None) -> None:
        """Answer about `rate` (0..1) of the requests to `provider` that no queued fault takes with a
        fault picked at random from `faults` (seeded, so a test is repeatable). Rate 0 turns it off."""
        check_provider(provider)
        choices = tuple(faults)
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if rate and not choices:
            raise ValueError("give at least one fault to pick from")
        with self._lock:
            if rate:
                self._random_faults[provider] = (rate, choices, random.Random(seed))
            else:
                self._random_faults.pop(provider, None)

    def set_latency(self, provider: Provider, latency_ms: int) -> None:
        """Delay every request to `provider` by `latency_ms` before it is handled."""
        check_provider(provider)
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        with self._lock:
            self._latency_ms[provider] = int(latency_ms)

    def add_rule(self, rule: RecipientRule) -> None:
        """Add a recipient rule; it takes precedence over earlier and built-in ones."""
        with self._lock:
            self._rules.insert(0, rule)  # newest rule wins

    def clear_faults(self) -> None:
        """Drop queued faults, latencies and added rules (built-in rules stay unless disabled)."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()
            self._random_faults.clear()
            self._latency_ms = {p: 0 for p in PROVIDERS}
            self._rules.clear()

    def next_fault(self, provider: Provider) -> Fault | None:
        """The fault the current request to `provider` gets (queued first, then random), or None."""
        with self._lock:
            queue = self._faults[provider]
            if not queue:
                chance = self._random_faults.get(provider)
                if chance is not None and chance[2].random() < chance[0]:
                    self.stats[f"{provider}_random_faults"] += 1
                    return chance[2].choice(chance[1])
                return None
            entry = queue[0]
            entry[1] -= 1
            if entry[1] <= 0:
                queue.popleft()
            return entry[0]

    def latency_ms(self, provider: Provider) -> int:
        """The injected latency for `provider`."""
        with self._lock:
            return self._latency_ms[provider]

    def rule_for(self, provider: Provider, to: str) -> RecipientRule | None:
        """The rule that applies to recipient `to` (newest added first, then built-in), or None."""
        with self._lock:
            rules = list(self._rules)
            if self._config.default_rules:
                rules += DEFAULT_RULES
        return next((r for r in rules if r.provider == provider and r.matches(to)), None)

    def faults_snapshot(self) -> dict[str, Any]:
        """Queued faults, latencies and rules as JSON (``GET /_sandbox/faults``)."""
        with self._lock:
            return {
                "latency_ms": dict(self._latency_ms),
                **{p: [dict(dataclasses.asdict(f), remaining=n) for f, n in q] for p, q in self._faults.items()},
                "rules": [dataclasses.asdict(r) for r in self._rules],
                "random": {p: {"rate": rate, "faults": [dataclasses.asdict(f) for f in faults]}
                           for p, (rate, faults, _rng) in self._random_faults.items()},
                "default_rules": [dataclasses.asdict(r) for r in DEFAULT_RULES]
                if self._config.default_rules
                else [],
            }

    def apply_faults_json(self, data: Any) -> None:
        """Apply a POST /_sandbox/faults body (validated before anything changes)."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        unknown = set(data) - {"latency_ms", "twilio", "sendgrid", "rules", "random"}
        if unknown:
            raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
        latency = data.get("latency_ms") or {}
        if not isinstance(latency, dict) or any(p not in PROVIDERS for p in latency):
            raise ValueError('latency_ms must look like {"twilio": 200, "sendgrid": 0}')
        latencies = {p: int(v) for p, v in latency.items()}
        queued: list[tuple[Provider, Fault]] = []
        for provider in PROVIDERS:
            items = data.get(provider) or []
            if not isinstance(items, list):
                raise ValueError(f"{provider} must be a list of faults")
            queued += [(provider, Fault.from_json(item)) for item in items]
        rules_json = data.get("rules") or []
        if not isinstance(rules_json, list):
            raise ValueError("rules must be a list")
        rules = [RecipientRule.from_json(r) for r in rules_json]
        random_json = data.get("random") or {}
        if not isinstance(random_json, dict) or any(p not in PROVIDERS for p in random_json):
            raise ValueError('random must look like {"twilio": {"rate": 0.3, "faults": [...], "seed": 1}}')
        randoms: list[tuple[Provider, float, list[Fault], int | None]] = []
        for provider, spec in random_json.items():
            if not isinstance(spec, dict) or set(spec) - {"rate", "faults", "seed"}:
                raise ValueError(f"random.{provider} must have rate, faults and optionally seed")
            randoms.append((provider, float(spec.get("rate", 0)), [Fault.from_json(f) for f in spec.get("faults") or []],
                            spec.get("seed")))
        for provider, ms in latencies.items():
            self.set_latency(provider, ms)
        for provider, fault in queued:
            self.add_fault(provider, fault)
        for rule in rules:
            self.add_rule(rule)
        for provider, rate, faults, seed in randoms:
            self.set_random_faults(provider, rate, faults, seed)

    # callbacks log ---------------------------------------------------------------------------

    def log_callback(self, entry: dict[str, Any]) -> None:
        """Record one attempted callback and count it (and count it failed unless it got a 2xx)."""
        with self._lock:
            self._callbacks.append(entry)
            self.stats[f"callbacks_{entry['kind']}"] += 1
            if entry.get("error") or not (200 <= (entry.get("status_code") or 0) < 300):
                self.stats["callbacks_failed"] += 1
            self._changed.notify_all()

    def callbacks(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The callback log (of `kind` when given), oldest first."""
        with self._lock:
            return [dict(c) for c in self._callbacks if kind is None or c["kind"] == kind]

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name` (shown by ``GET /_sandbox/stats``)."""
        with self._lock:
            self.stats[name] += n

    def stats_snapshot(self) -> dict[str, int]:
        """A consistent copy of every counter."""
        with self._lock:
            return dict(self.stats)
