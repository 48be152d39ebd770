"""Runbooks as data, the targets their checks point at, and every check run."""

from __future__ import annotations

import dataclasses
import os
import string
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from incidents.models import validate_categories
from incidents.rules.choices import list_problem

from .probes.base import ProbeError, get_probe, parse_params, seconds_words
from .probes.findings import EVIDENCE_KEYS
from .probes.kubeconfig import check_kubeconfig
from .probes.netguard import url_hosts, url_refusal
from .probes.secrets import FORBIDDEN_SECRET_ENV, secret_env_refusal  # noqa: F401 (re-exported)


class TargetKind(models.TextChoices):
    HTTP = "http", "HTTP endpoint (API health)"
    BANCA = "banca", "Banca endpoint"
    POSTGRES = "postgres", "PostgreSQL"
    REDIS = "redis", "Redis"
    RABBITMQ = "rabbitmq", "RabbitMQ"
    PROMETHEUS = "prometheus", "Prometheus"
    KUBERNETES = "kubernetes", "Kubernetes"
    STRIPE = "stripe", "Stripe"


# The settings whose values are LotoOps's own secrets: a target's secret equal to
# one of them is never used either (an allowed name set to the same value).
_OWN_SECRET_SETTINGS = (
    "SECRET_KEY",
    "EMAIL_HOST_PASSWORD",
    "STRIPE_WEBHOOK_SECRET",
    "METRICS_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_WEBHOOK_URL",
    "NOTIFY_WEBHOOK_SECRET",
    "NOTIFY_WEBHOOK_URL",
)
_OWN_SECRET_URLS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")


def _own_secret_values() -> set[str]:
    values = {str(getattr(settings, name, "") or "") for name in _OWN_SECRET_SETTINGS}
    for name in _OWN_SECRET_URLS:
        try:
            values.add(urlsplit(str(getattr(settings, name, "") or "")).password or "")
        except ValueError:
            continue
    return {v for v in values if v}


def _origin(url: str) -> list[str]:
    """Where a URL's requests go: scheme://host:port of each of its hosts."""
    scheme = urlsplit(url).scheme.lower()
    return [
        f"{scheme}://{f'[{host}]' if ':' in host else host}:{port or ''}".rstrip(":")
        for host, port in url_hosts(url)
    ]


def _connection_destinations(url: str, options: dict[str, Any]) -> list[str]:
    """Where a Kubernetes connection (a target, or a step's `kubernetes` parameter)
    sends its credentials: its URL, the in-cluster API server, a kubeconfig's context."""
    found = _origin(url) if url else []
    if options.get("in_cluster"):
        found.append("in-cluster service account")
    if options.get("kubeconfig"):
        context = options.get("context") or "current context"
        found.append(f"kubeconfig {options['kubeconfig']} ({context})")
    return found


# Options that name a secret a probe sends to an address another option gives: a
# Stripe target's webhook signing secret signs what is posted to its webhook_url.
OPTION_SECRETS = {TargetKind.STRIPE: ("webhook_secret_env",)}
OPTION_ADDRESSES = {TargetKind.STRIPE: ("webhook_url",)}


class Target(models.Model):
    """Where checks point. The URL carries no password: the secret (password or
    token) is read at run time from the environment variable named here.

    The secret belongs to the addresses it was bound for (`secret_hosts`): saving
    the target pointing elsewhere (its URL's host or port, a Kubernetes target's
    kubeconfig, context or in_cluster) clears the binding until a superuser binds
    it again, and a row whose addresses no longer match is refused at run time."""

    name = models.CharField(max_length=80, unique=True, help_text="e.g. lotolink-db")
    kind = models.CharField(max_length=20, choices=TargetKind.choices)
    url = models.CharField(
        max_length=500,
        blank=True,
        help_text="Address without password, e.g. postgres://lotolink@db:5432/lotolink "
        "(empty only for a Kubernetes target with in_cluster or a kubeconfig)",
    )
    secret_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the password or token. "
        "Only superusers set it; it is bound to the target's address and cleared "
        "when the target is pointed elsewhere.",
    )
    secret_hosts = models.JSONField(
        default=list,
        blank=True,
        editable=False,
        help_text="The addresses the secret was bound for (set when it is bound).",
    )
    options = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, rebind: bool = False, **kwargs: Any) -> None:
        """`rebind`: bind the secret to where the target points now (superusers, in
        admin). A new target binds its secret to its addresses; an existing one whose
        addresses changed loses its binding."""
        here = self.destinations()
        if not self.named_secrets():
            self.secret_hosts = []
        elif rebind or (self._state.adding and not self.secret_hosts):
            self.secret_hosts = here
        elif self.secret_hosts != here:
            self.secret_env = ""
            if isinstance(self.options, dict):
                dropped = OPTION_SECRETS.get(self.kind, ())
                self.options = {k: v for k, v in self.options.items() if k not in dropped}
            self.secret_hosts = []
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {
                *kwargs["update_fields"],
                "secret_env",
                "secret_hosts",
                "options",
            }
        super().save(*args, **kwargs)

    def option_secrets(self) -> dict[str, str]:
        """The options naming a secret this target's probes send (option -> variable)."""
        options = self.options if isinstance(self.options, dict) else {}
        return {
            name: options[name]
            for name in OPTION_SECRETS.get(self.kind, ())
            if isinstance(options.get(name), str) and options[name]
        }

    def named_secrets(self) -> list[str]:
        """Every variable this target names whose value its probes send somewhere."""
        return [e for e in (self.secret_env, *self.option_secrets().values()) if e]

    def destinations(self) -> list[str]:
        """Every field that decides where this target's requests (and its secret) go."""
        options = self.options if isinstance(self.options, dict) else {}
        if self.kind == TargetKind.KUBERNETES:
            return _connection_destinations(self.url, options)
        found = _origin(self.url) if self.url else []
        for name in OPTION_ADDRESSES.get(self.kind, ()):
            if isinstance(options.get(name), str) and options[name]:
                found += _origin(options[name])
        return found

    def clean(self) -> None:
        options = self.options if isinstance(self.options, dict) else {}
        if not isinstance(self.options, dict):
            raise ValidationError({"options": "Give a JSON object, e.g. {}."})
        kube = self.kind == TargetKind.KUBERNETES
        if kube and options.get("in_cluster") and self.url:
            raise ValidationError(
                {
                    "url": "in_cluster uses the worker pod's own API server and token: "
                    "it never goes with a URL. Clear the URL or drop in_cluster."
                }
            )
        if kube and options.get("kubeconfig"):
            try:
                check_kubeconfig(options["kubeconfig"])
            except ProbeError as exc:
                raise ValidationError({"options": str(exc)}) from None
        if not self.url:
            if kube and (options.get("in_cluster") or options.get("kubeconfig")):
                return self._clean_secret()
            raise ValidationError({"url": "Give a full URL with its scheme."})
        parts = urlsplit(self.url)
        if not parts.scheme:
            raise ValidationError({"url": "Give a full URL with its scheme."})
        if parts.password:
            raise ValidationError(
                {"url": "Do not put a password in the URL: name its environment variable."}
            )
        if refusal := url_refusal(self.url):
            raise ValidationError({"url": f"Refused: {refusal}."})
        webhook = options.get("webhook_url")
        if isinstance(webhook, str) and webhook and (refusal := url_refusal(webhook)):
            raise ValidationError({"options": f"webhook_url refused: {refusal}."})
        self._clean_secret()

    def _clean_secret(self) -> None:
        if refusal := secret_env_refusal(self.secret_env):
            raise ValidationError({"secret_env": refusal})
        for name, env in self.option_secrets().items():
            if refusal := secret_env_refusal(env):
                raise ValidationError({"options": f"{name}: {refusal}"})

    def binding_refusal(self) -> str:
        """Why the secret is not bound to where the target points now ("" when it
        is). A target not saved yet binds on its first save."""
        named = self.named_secrets()
        if not named or (self._state.adding and not self.secret_hosts):
            return ""
        here = self.destinations()
        if self.secret_hosts == here:
            return ""
        bound = ", ".join(self.secret_hosts) or "no address"
        return (
            f"its secret {', '.join(named)} was bound for {bound} and the target now points "
            f"at {', '.join(here) or 'nothing'}: nothing is sent until a superuser binds "
            "the secret again (Targets in admin)"
        )

    def secret_refusal(self) -> str:
        """Why this target's secret will not be used ("" when it will): checked at
        run time too, so a row written around the admin cannot send LotoOps's own
        secrets anywhere, nor a secret to an address it was not bound for."""
        if refusal := secret_env_refusal(self.secret_env):
            return refusal
        # An option's variable name is refused where it is read (read_secret_env):
        # a step's parameter may stand in for it.
        if refusal := self.binding_refusal():
            return refusal
        own = _own_secret_values()
        for env in self.named_secrets():
            if (value := os.environ.get(env, "")) and value in own:
                return f"{env} holds one of LotoOps's own secrets: it is never sent."
        return ""

    def address_refusal(self) -> str:
        """Why a probe may not connect where this target points ("" when it may): its
        URL's host resolves to a forbidden address (netguard). A name that does not
        resolve here is left to the probe, which checks again as it connects."""
        if not self.url:
            return ""
        return url_refusal(self.url)

    def run_refusal(self) -> str:
        """Why no check may run against this target now ("" when one may)."""
        return self.secret_refusal() or self.address_refusal()

    def secret(self) -> str:
        if not self.secret_env or self.secret_refusal():
            return ""
        return os.environ.get(self.secret_env, "")

    def url_with_secret(self) -> str:
        """The URL with the secret as its password (never store or print it)."""
        secret = self.secret()
        if not secret:
            return self.url
        parts = urlsplit(self.url)
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{quote(user, safe='')}:{quote(secret, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Runbook(models.Model):
    """One procedure of the runbook (sections 1–6 and the command reference)."""

    key = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=120)
    section = models.CharField(max_length=20, help_text="Runbook section: 1–6 or reference")
    categories = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_categories],
        help_text="The incident page opens this procedure for incidents of these "
        "categories (and its automatic diagnostics run for them).",
    )
    symptoms = models.TextField(blank=True)
    order = models.PositiveSmallIntegerField(default=0)
    recovery_checks = models.JSONField(
        default=list,
        blank=True,
        help_text="Keys of the diagnostics that must pass (outcome ok, twice, "
        "RECOVERY_INTERVAL apart) before an incident of these categories resolves, "
        'e.g. ["pay.pending_plays", "pay.webhook_status"]; their thresholds are the '
        "steps' parameters. Empty: incidents resolve at once.",
    )

    class Meta:
        ordering = ["order"]

    def __str__(self) -> str:
        return f"{self.section}. {self.title}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        validate_categories(self.categories)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if refusal := recovery_checks_refusal(self.recovery_checks):
            raise ValidationError({"recovery_checks": refusal})


def recovery_checks_refusal(keys: Any) -> str:
    """Why these recovery check keys cannot be used ("" when they can): each must
    name an existing, runnable diagnostic step, once."""
    if not isinstance(keys, list) or not all(isinstance(k, str) and k.strip() for k in keys):
        return 'Give a list of step keys, e.g. ["pay.pending_plays"].'
    if len(set(keys)) != len(keys):
        return "Name each check once."
    steps = {step.key: step for step in RunbookStep.objects.filter(key__in=keys)}
    problems = []
    for key in keys:
        step = steps.get(key)
        if step is None:
            problems.append(f"{key}: no such step")
        elif step.kind != StepKind.DIAGNOSTIC:
            problems.append(f"{key}: a recovery check must be a diagnostic, not {step.kind}")
        elif not step.available:
            problems.append(f"{key}: its probe {step.probe} is not available")
        elif mismatch := step.kind_mismatch():
            problems.append(f"{key}: {mismatch}")
    return "; ".join(problems)


def validate_evidence_list(value: Any) -> None:
    """The form of a list of evidence keys (a list, not a text); which keys are known
    is checked by `RunbookStep.clean` and `save` (a step's parameters may name its own)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        got = f"the text {value!r}" if isinstance(value, str) else type(value).__name__
        raise ValidationError(
            f"Expected a list of evidence keys, got {got}: tick the keys instead.",
            code="invalid_evidence",
        )


def known_evidence(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Every evidence key a step may name: the probes' (probes.findings) and those the
    steps' parameters name (`evidence = "plays_stuck"` of a count query), with labels."""
    known = dict(EVIDENCE_KEYS)
    named = {
        params.get("evidence")
        for params in RunbookStep.objects.values_list("params", flat=True)
        if isinstance(params, dict)
    } | set(extra)
    for key in sorted(k for k in named if isinstance(k, str) and k):
        known.setdefault(key, key.replace("_", " ").capitalize() + " (a step's parameter)")
    return known


class StepKind(models.TextChoices):
    DIAGNOSTIC = "diagnostic", "Diagnostic"
    ACTION = "action", "Resolution action"
    # Interactive by nature (a shell in a pod, a psql session): the page shows the
    # exact command to copy and never runs it.
    MANUAL = "manual", "Run by hand (copy the command)"


def secret_values(probe: Any, params: Any) -> dict[str, Any]:
    """The step parameters that name a secret or say where one is sent (the probe's
    `secret_params`), as set: only superusers set or change them."""
    if probe is None or not isinstance(params, dict):
        return {}
    return {
        name: params[name]
        for name in getattr(probe, "secret_params", ())
        if params.get(name) not in (None, "", {}, [])
    }


def secret_state(probe: Any, params: Any) -> dict[str, Any]:
    """What a step's secret binding records: the variables its parameters name
    (parameter -> variable) and where the secret goes ({} when they name neither).
    A connection object (banca.hmac_match's `kubernetes`) names `token_env` and goes
    where a Kubernetes target would; a URL parameter goes to its scheme, host, port."""
    secrets: dict[str, str] = {}
    to: list[str] = []
    for name, value in secret_values(probe, params).items():
        if isinstance(value, dict):
            if isinstance(value.get("token_env"), str) and value["token_env"]:
                secrets[f"{name}.token_env"] = value["token_env"]
            url = value.get("url") if isinstance(value.get("url"), str) else ""
            to += _connection_destinations(url, value) or [f"{name}: no address"]
        elif isinstance(value, str) and name.endswith("_env"):
            secrets[name] = value
        elif isinstance(value, str):
            to += _origin(value)
    return {"secrets": secrets, "to": to} if secrets or to else {}


def _secret_urls(probe: Any, params: Any) -> list[tuple[str, str]]:
    """(parameter, URL) of every URL a secret parameter sends to."""
    urls = []
    for name, value in secret_values(probe, params).items():
        if isinstance(value, dict) and isinstance(value.get("url"), str) and value["url"]:
            urls.append((f"{name}.url", value["url"]))
        elif isinstance(value, str) and not name.endswith("_env"):
            urls.append((name, value))
    return urls


def _binding_words(state: dict[str, Any]) -> str:
    where = ", ".join(state.get("to") or []) or "no address of its own"
    named = ", ".join(f"{env} ({name})" for name, env in (state.get("secrets") or {}).items())
    return f"{where} with {named}" if named else where


class RunbookStep(models.Model):
    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=60, unique=True, help_text="Stable id, e.g. db.locks")
    title = models.CharField(
        max_length=200,
        help_text="May name a parameter in braces, e.g. “Queries running over {min_seconds}”: "
        "the page shows its value (5 min), so the title follows the parameter",
    )
    kind = models.CharField(max_length=20, choices=StepKind.choices)
    probe = models.CharField(max_length=60, help_text="Probe name, e.g. postgres.locks")
    target_kind = models.CharField(max_length=20, choices=TargetKind.choices)
    params = models.JSONField(default=dict, blank=True)
    finds = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_evidence_list],
        help_text="What this check can find (evidence keys its probe reports). An action "
        "recommended by one of them is highlighted when this check finds it.",
    )
    recommended_by = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_evidence_list],
        help_text="For an action: the findings that recommend it (it is highlighted on "
        "the incident page once a check has found one of them).",
    )
    every_target = models.BooleanField(
        default=False, help_text="Run once per active target of its kind (e.g. every banca)"
    )
    command = models.TextField(blank=True, help_text="The runbook's command, for reference")
    timeout_seconds = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1, "A step needs at least one second to run.")],
        help_text="Hard limit in seconds: the run is stopped and marked timed out after it.",
    )
    order = models.PositiveSmallIntegerField(default=0)
    requires_approval = models.BooleanField(
        default=False,
        help_text="An action that always waits for a second person's approval "
        "(actions on incidents of ACTION_APPROVAL_SEVERITIES always do)",
    )
    secret_binding = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="The secrets the parameters name and where they were bound to be sent "
        "(set when a superuser saves them; see secret_state).",
    )

    class Meta:
        ordering = ["runbook__order", "order"]

    def __str__(self) -> str:
        return f"{self.key}: {self.title}"

    def save(self, *args: Any, rebind: bool = False, **kwargs: Any) -> None:
        """`rebind`: bind the secrets the parameters name to where they point now
        (superusers, in admin). A new step (the seed) binds its own; an existing one
        whose secret parameters changed loses its binding: its runs are refused
        until a superuser binds it again."""
        # The same refusal whatever the path (admin, seed, shell): a misspelt key
        # would never recommend the action it is meant to.
        if problems := self.evidence_problems():
            raise ValidationError(problems)
        if self.timeout_seconds is not None and self.timeout_seconds < 1:
            raise ValidationError({"timeout_seconds": "A step needs at least one second to run."})
        here = self.secret_state()
        if not here:
            self.secret_binding = {}
        elif rebind or (self._state.adding and not self.secret_binding):
            self.secret_binding = here
        elif self.secret_binding != here:
            self.secret_binding = {}
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "secret_binding"}
        super().save(*args, **kwargs)

    def secret_state(self, params: Any = None) -> dict[str, Any]:
        """The secret state of these parameters (the step's own by default)."""
        return secret_state(self.probe_class(), self.params if params is None else params)

    def binding_refusal(self, params: Any = None) -> str:
        """Why the secret these parameters (a run's, else the step's) name or send is
        not bound to where they point ("" when it is, or they name none)."""
        here = self.secret_state(params)
        if not here or here == self.secret_binding:
            return ""
        if self._state.adding and not self.secret_binding and params is None:
            return ""  # binds on its first save
        bound = _binding_words(self.secret_binding) if self.secret_binding else "nothing"
        return (
            f"the secret its parameters name was bound for {bound} and the step now points "
            f"at {_binding_words(here)}: nothing is sent until a superuser binds the secret "
            "again (Runbook steps in admin)"
        )

    def secret_refusal(self, params: Any = None) -> str:
        """Why the secrets these parameters name will not be sent ("" when they will):
        checked by the worker too, so a row written around the admin cannot send
        LotoOps's own secrets, nor a secret where it was not bound for."""
        here = self.secret_state(params)
        for name, env in (here.get("secrets") or {}).items():
            if refusal := secret_env_refusal(env):
                return f"{name}: {refusal}"
        if refusal := self.binding_refusal(params):
            return refusal
        own = _own_secret_values()
        for name, env in (here.get("secrets") or {}).items():
            if (value := os.environ.get(env, "")) and value in own:
                return f"{name}: {env} holds one of LotoOps's own secrets: it is never sent."
        return ""

    def address_refusal(self, params: Any = None) -> str:
        """Why a secret parameter's URL may not be connected to (netguard)."""
        for name, url in _secret_urls(
            self.probe_class(), self.params if params is None else params
        ):
            if refusal := url_refusal(url):
                return f"{name} refused: {refusal}"
        return ""

    def run_refusal(self, params: Any = None) -> str:
        """Why this step may not run with these parameters now ("" when it may)."""
        return self.secret_refusal(params) or self.address_refusal(params)

    @property
    def is_action(self) -> bool:
        return self.kind == StepKind.ACTION

    def recovery_refusal(self) -> str:
        """A step named as a recovery check keeps its key and stays a diagnostic."""
        if not self.pk:
            return ""
        old = RunbookStep.objects.filter(pk=self.pk).values_list("key", flat=True).first()
        if old is None:
            return ""
        books = runbooks_naming(old)
        if books and (old != self.key or self.kind != StepKind.DIAGNOSTIC):
            names = ", ".join(book.title for book in books)
            return (
                f"{old} is a recovery check of {names}: take it out of their recovery checks first."
            )
        return ""

    def probe_class(self) -> Any:
        return get_probe(self.probe)

    @property
    def display_title(self) -> str:
        """The title with its {parameter} placeholders filled from the step's
        parameters (or the probe's defaults): durations as a title says them."""
        return title_with_params(self.title, self.probe_class(), self.params)

    @property
    def available(self) -> bool:
        return self.kind != StepKind.MANUAL and self.probe_class() is not None

    def kind_mismatch(self) -> str:
        """Why this step's kind does not follow its probe ("" when it does): an
        action probe only ever runs as a confirmed action, never as a diagnostic
        (whatever the row says), and an action step needs an action probe."""
        probe = self.probe_class()
        if probe is None or self.kind == StepKind.MANUAL:
            return ""
        if probe.action and self.kind != StepKind.ACTION:
            return f"{self.probe} changes the platform: only an action step may use it."
        if not probe.action and self.kind == StepKind.ACTION:
            return f"{self.probe} is a diagnostic probe: an action step needs an action probe."
        return ""

    def clean(self) -> None:
        if refusal := self.recovery_refusal():
            raise ValidationError(refusal)
        if problems := self.evidence_problems():
            raise ValidationError(problems)
        probe = self.probe_class()
        if probe is None:
            return  # a probe to come: the page shows "not available yet"
        if mismatch := self.kind_mismatch():
            raise ValidationError({"kind": mismatch})
        if probe.target_kind != self.target_kind:
            raise ValidationError({"target_kind": f"{self.probe} runs against {probe.target_kind}"})
        try:
            parse_params(probe.Params, self.params)
        except ProbeError as exc:
            raise ValidationError({"params": str(exc)}) from None
        for name, env in (self.secret_state().get("secrets") or {}).items():
            if refusal := secret_env_refusal(env):
                raise ValidationError({"params": f"{name}: {refusal}"})
        if refusal := self.address_refusal():
            raise ValidationError({"params": refusal})
        if refusal := title_refusal(self.title, probe):
            raise ValidationError({"title": refusal})

    def _own_evidence(self) -> tuple[str, ...]:
        named = self.params.get("evidence") if isinstance(self.params, dict) else None
        return (named,) if isinstance(named, str) and named else ()

    def evidence_problems(self) -> dict[str, str]:
        known = known_evidence(self._own_evidence())
        problems = {}
        for name in ("finds", "recommended_by"):
            if problem := list_problem(getattr(self, name), known, "evidence key"):
                problems[name] = problem
        return problems


def _placeholders(title: str) -> list[str] | None:
    """The {names} a title uses, or None when its braces are malformed."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(title) if name is not None]
    except ValueError:
        return None


def title_refusal(title: str, probe: Any) -> str:
    """Why a title's placeholders cannot be filled from the probe's parameters."""
    names = _placeholders(title)
    if names is None:
        return "Unbalanced braces: name a parameter as {min_seconds}."
    known = {f.name for f in dataclasses.fields(probe.Params)}
    unknown = sorted({n for n in names if n not in known})
    if unknown:
        choices = ", ".join(sorted(known)) or "none"
        return (
            f"The title names {', '.join('{' + n + '}' for n in unknown)}, which {probe.name} "
            f"does not have (its parameters: {choices})."
        )
    return ""


def title_with_params(title: str, probe: Any, params: dict[str, Any]) -> str:
    names = _placeholders(title)
    if not names or probe is None:
        return title
    try:
        values = parse_params(probe.Params, params)
    except ProbeError:
        return title
    filled = {}
    for name in names:
        value = getattr(values, name, None)
        if value is None:
            return title
        filled[name] = _param_words(name, value)
    return title.format(**filled)


def _param_words(name: str, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name.endswith("_seconds"):
            return seconds_words(value)
        if name.endswith("_minutes"):
            return seconds_words(value * 60)
        return f"{value:g}"
    return str(value)


def runbooks_naming(key: str) -> list[Runbook]:
    """The procedures that name step `key` as a recovery check."""
    return [book for book in Runbook.objects.all() if key in (book.recovery_checks or [])]


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class CheckRun(models.Model):
    """One execution of a step for an incident."""

    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="check_runs"
    )
    step = models.ForeignKey(RunbookStep, on_delete=models.PROTECT, related_name="runs")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="runs")
    target_name = models.CharField(max_length=80, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    params = models.JSONField(default=dict, blank=True)
    plan = models.TextField(blank=True, help_text="What an action said it would do, confirmed")
    batch = models.CharField(max_length=40, blank=True, help_text="Run-all group")

    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    outcome = models.CharField(max_length=10, blank=True)
    summary = models.TextField(blank=True)
    output = models.TextField(blank=True)
    output_size = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    version = models.PositiveIntegerField(default=0, help_text="Bumped on every change")

    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["incident", "-id"], name="checkrun_incident"),
            models.Index(fields=["status", "heartbeat_at"], name="checkrun_status"),
        ]

    def __str__(self) -> str:
        return f"{self.step.key} #{self.pk} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    @property
    def duration(self) -> Any:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class WorkerHeartbeat(models.Model):
    hostname = models.CharField(max_length=200, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} at {self.seen_at:%H:%M:%S}"


class ActionConfirmation(models.Model):
    """A used confirmation: its nonce is unique, so a signed plan queues its action
    once, however often (or however concurrently) it is posted."""

    nonce = models.CharField(max_length=64, unique=True)
    incident = models.ForeignKey("incidents.Incident", on_delete=models.CASCADE, related_name="+")
    step_key = models.CharField(max_length=60)
    run = models.OneToOneField(
        CheckRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="confirmation"
    )
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    used_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.step_key} confirmation (run #{self.run_id})"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Awaiting approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    VOID = "void", "Void: changed since it was asked"


class ActionApproval(models.Model):
    """A confirmed action waiting for a second person: the exact plan, target and
    parameters the requester confirmed; approving queues exactly that, once."""

    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="action_approvals"
    )
    step = models.ForeignKey(RunbookStep, on_delete=models.PROTECT, related_name="approvals")
    target = models.ForeignKey(Target, null=True, on_delete=models.SET_NULL, related_name="+")
    target_name = models.CharField(max_length=80)
    params = models.JSONField(default=dict, blank=True)
    plan = models.TextField()
    # The step's probe and the target's address when it was asked (approvals.binding),
    # and an HMAC over all of it with the plan and params: approving a request whose
    # step, target or row changed since voids it instead.
    binding = models.JSONField(default=dict, blank=True)
    signature = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=20, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    run = models.OneToOneField(
        CheckRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="approval"
    )

    class Meta:
        ordering = ["-id"]
        permissions = [("approve_actions", "Can approve resolution actions on every incident")]
        indexes = [models.Index(fields=["incident", "status"], name="approval_incident_status")]

    def __str__(self) -> str:
        return f"{self.step.key} for #{self.incident_id} ({self.status})"

    def expired(self, now: Any = None) -> bool:
        return (now or timezone.now()) >= self.expires_at


class RecoveryState(models.TextChoices):
    VERIFYING = "verifying", "Verifying recovery"
    FAILED = "failed", "Recovery checks failed"
    PASSED = "passed", "Recovery verified"
    OVERRIDDEN = "overridden", "Resolved by override"
    RESOLVED = "resolved", "Resolved, verified"
    REOPENED = "reopened", "Reopened by the watch"
    CANCELLED = "cancelled", "Cancelled"


class RecoveryVerification(models.Model):
    """One "Mark resolved" on an incident whose procedure names recovery checks:
    the checks run as ordinary check runs (batch `recovery-<id>-<round>`), twice,
    RECOVERY_INTERVAL apart; then, once resolved, the watch re-runs them (batch
    `recovery-<id>-w<n>`) until `watch_until`. diagnostics/recovery.py moves it."""

    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="recovery_verifications"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(
        max_length=20, choices=RecoveryState.choices, default=RecoveryState.VERIFYING
    )
    checks = models.JSONField(default=list, help_text="The step keys, as configured when asked")
    round = models.PositiveSmallIntegerField(default=1)
    rounds = models.PositiveSmallIntegerField(default=2)
    interval_seconds = models.FloatField(default=120.0)
    next_round_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Why it was resolved without verification")
    failures = models.JSONField(default=list, blank=True, help_text="The failing checks' evidence")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    watch_until = models.DateTimeField(null=True, blank=True)
    next_watch_at = models.DateTimeField(null=True, blank=True)
    watch_round = models.PositiveIntegerField(default=0, help_text="Watch rounds started")
    watch_judged = models.PositiveIntegerField(default=0, help_text="Watch rounds judged")
    reopened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One verification in flight per incident, however many clicks or calls.
            models.UniqueConstraint(
                fields=["incident"],
                condition=models.Q(state="verifying"),
                name="one_recovery_verification_at_a_time",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "next_watch_at"], name="recovery_watch_due"),
        ]

    def __str__(self) -> str:
        return f"recovery of #{self.incident_id} ({self.state})"
