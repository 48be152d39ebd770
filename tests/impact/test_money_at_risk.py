"""Money at risk, against a real platform database with plays in known states: the
probe's totals per currency, banca and Stripe state are exact, the card shows them,
the trend survives a reload (samples are rows), a sudden rise suggests a higher
severity (never sets it), and the post-mortem's Impact section carries the peak and
the total at resolution with where they came from."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from diagnostics import impact
from diagnostics.models import Runbook, RunbookStep
from diagnostics.probes.base import ProbeError
from diagnostics.tasks import sample_money_at_risk
from incidents import services
from incidents.models import ImpactSample, PostMortem, Status
from incidents.rules import money
from tests import factories
from tests.impact.platform_db import EXPECTED_TOTALS, add_plays

pytestmark = pytest.mark.django_db


def run_probe(platform, **params):
    step = RunbookStep.objects.get(key="pay.money_at_risk")
    probe = step.probe_class().build(platform, step.params | params, timeout=10)
    return probe.run()


def by(rows, key):
    return {
        (r[key], r["currency"]): (r["long"], r["long_count"], r["short"], r["short_count"])
        for r in rows
    }


def test_the_probe_counts_every_currency_banca_and_stripe_state_exactly(platform):
    result = run_probe(platform)
    data = result.data
    assert data["totals"] == {
        c: t
        | {
            "long_users": data["totals"][c]["long_users"],
            "short_users": data["totals"][c]["short_users"],
        }
        for c, t in EXPECTED_TOTALS.items()
    }
    assert {c: t["long"] for c, t in data["totals"].items()} == {
        "USD": 3550, "DOP": 500000, "JPY": 700, "EUR": 1234
    }  # fmt: skip
    assert data["plays"] == {"long": 5, "short": 8}
    assert data["users"] == {"long": 4, "short": 6}  # player 1 has two plays, player 3 too
    assert by(data["by_banca"], "banca") == {
        ("banca-norte", "USD"): (3550, 2, 3550, 2),
        ("banca-sur", "USD"): (0, 0, 999, 1),
        ("banca-sur", "DOP"): (500000, 1, 500000, 1),
        ("banca-norte", "DOP"): (0, 0, 5001, 1),
        ("banca-sur", "JPY"): (700, 1, 700, 1),
        ("(none)", "EUR"): (1234, 1, 1234, 1),
        ("banca-norte", "EUR"): (0, 0, 100, 1),
    }
    assert by(data["by_state"], "state") == {
        ("processing", "USD"): (1000, 1, 1999, 2),
        ("requires_action", "USD"): (2550, 1, 2550, 1),
        ("processing", "DOP"): (500000, 1, 500000, 1),
        ("requires_payment_method", "DOP"): (0, 0, 5001, 1),
        ("processing", "JPY"): (700, 1, 700, 1),
        ("(none)", "EUR"): (1234, 1, 1234, 1),
        ("processing", "EUR"): (0, 0, 100, 1),
    }
    assert result.outcome == "failing"
    assert result.evidence["plays_stuck"]["count"] == 5
    assert "5 plays pending over 60 min" in result.summary
    assert "12.34 EUR + 700 JPY + 35.50 USD + 5,000.00 DOP" not in result.summary  # sorted
    assert "5,000.00 DOP + 12.34 EUR + 700 JPY + 35.50 USD" in result.summary


def test_the_windows_are_the_steps_params(platform):
    data = run_probe(platform, window_minutes=100, short_window_minutes=60).data
    assert data["plays"] == {"long": 2, "short": 5}  # 120 and 180 min; plus 90, 75 and 62
    assert data["totals"]["USD"]["long"] == 1000 and data["totals"]["USD"]["short"] == 3550


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"table": "plays; DROP TABLE plays"}, "must be a column or table name"),
        ({"amount_column": "amount)"}, "must be a column or table name"),
        ({"short_window_minutes": 60}, "shorter than window_minutes"),
        ({"window_minutes": 0}, "between 1 and 10080"),
    ],
)
def test_bad_params_are_refused_before_any_query(platform, params, message):
    with pytest.raises(ProbeError, match=message):
        run_probe(platform, **params)


def test_fractional_amounts_are_refused_not_rounded(platform):
    import psycopg

    from tests.impact.platform_db import PLATFORM_URL

    with psycopg.connect(PLATFORM_URL, autocommit=True) as conn:
        conn.execute("ALTER TABLE plays ALTER COLUMN amount TYPE numeric")
        conn.execute("UPDATE plays SET amount = amount + 0.5 WHERE currency = 'JPY'")
    with pytest.raises(ProbeError, match="whole minor units"):
        run_probe(platform)


def test_money_is_formatted_exactly_per_currency():
    assert money.format_money(500000, "DOP") == "5,000.00 DOP"
    assert money.format_money(700, "jpy") == "700 JPY"
    assert money.format_money(1234567, "KWD") == "1,234.567 KWD"
    assert money.major(10**20 + 1, "USD") == Decimal("1000000000000000000.01")
    assert money.format_totals({"USD": 0}) == "nothing"


def test_a_sample_per_interval_however_many_beats(platform, responder):
    incident = factories.declare(actor=responder, category="payment")
    factories.declare(actor=responder, category="database", title="Not about money")
    assert sample_money_at_risk() == 1
    assert sample_money_at_risk() == 0  # the same interval: already taken
    sample = ImpactSample.objects.get()
    assert sample.incident == incident
    assert (sample.probe, sample.step_key, sample.target_name) == (
        "postgres.money_at_risk",
        "pay.money_at_risk",
        "lotolink-db",
    )
    assert sample.long_totals() == {c: t["long"] for c, t in EXPECTED_TOTALS.items()}
    assert (sample.plays_long, sample.users_long, sample.error) == (5, 4, "")
    # Nothing on the timeline: a reading a minute would bury it.
    assert not incident.timeline.filter(message__icontains="money").exists()


def test_a_failing_reading_is_kept_with_its_reason(platform, responder):
    platform.url = "postgres://postgres@127.0.0.1:5432/no_such_platform_db"
    platform.save()
    incident = factories.declare(actor=responder, category="banca")
    sample = impact.take_sample(incident)
    assert "no_such_platform_db" in sample.error and sample.plays_long == 0


def test_the_card_shows_exact_totals_and_the_trend_survives_a_reload(
    platform, responder, responder_client
):
    incident = factories.declare(actor=responder, category="payment")
    start = timezone.now()
    impact.take_sample(incident, now=start)
    add_plays([(70, "pending", 450, "USD", "banca-oeste", "processing", 11)])
    impact.take_sample(incident, now=start + timedelta(minutes=2))
    for _ in range(2):  # a reload draws the same card: the readings are rows
        page = responder_client.get(incident.get_absolute_url()).content.decode()
        card = page[page.index('id="money-at-risk"') :]
        card = card[: card.index("</section>")]
        assert 'data-samples="2"' in card
        assert '<strong id="money-plays-long">6</strong>' in card
        usd = r'data-currency="USD"><td>USD</td><td class="num" data-window="long">'
        assert re.search(usd + r"40.00 USD <small>\(3\)</small>", card)
        assert "5,000.00 DOP <small>(1)</small>" in card
        assert "700 JPY" in card and "12.34 EUR" in card
        oeste = 'data-banca="banca-oeste" data-currency="USD"><td>banca-oeste</td>'
        assert oeste + '<td class="num" data-window="long">4.50 USD' in card
        assert 'data-state="requires_payment_method" data-currency="DOP"' in card
        points = re.search(r'<polyline points="([^"]*)"', card)[1].split()
        assert len(points) == 2
        assert "lotolink-db" in card and "postgres.money_at_risk" in card
        assert "Sudden rise" not in card


def test_a_sudden_rise_suggests_a_higher_severity_and_changes_nothing(
    platform, responder, responder_client, settings
):
    settings.MONEY_AT_RISK_RISE_MIN_PLAYS = 5
    incident = factories.declare(actor=responder, category="payment", severity="P2")
    start = timezone.now()
    impact.take_sample(incident, now=start)  # 8 plays over 15 min
    add_plays([(20, "pending", 100, "EUR", "banca-sur", "processing", 20 + n) for n in range(8)])
    impact.take_sample(incident, now=start + timedelta(minutes=5))  # 16: doubled in 5 min
    page = responder_client.get(incident.get_absolute_url()).content.decode()
    assert "Sudden rise: plays pending rose from 8 to 16" in page
    assert "Raise to P1" in page
    incident.refresh_from_db()
    assert incident.severity.key == "P2"  # a suggestion only


def test_no_rise_when_the_doubling_took_longer_than_the_window(platform, responder, settings):
    series = [
        (timezone.now() - timedelta(minutes=30), {"plays": 8, "USD": 100}),
        (timezone.now(), {"plays": 16, "USD": 150}),
    ]
    assert money.sudden_rise(series, window=timedelta(minutes=10), factor=Decimal(2)) is None
    series.insert(1, (timezone.now() - timedelta(minutes=9), {"plays": 9, "USD": 70}))
    rise = money.sudden_rise(series, window=timedelta(minutes=10), factor=Decimal(2))
    assert rise is not None and (rise.metric, rise.before, rise.now) == ("USD", 70, 150)


def test_the_post_mortem_impact_carries_the_peak_and_the_last_reading_before_resolution(
    platform, responder
):
    incident = factories.declare(actor=responder, category="payment")
    start = timezone.now() - timedelta(minutes=10)  # readings before the resolution
    impact.take_sample(incident, now=start)
    add_plays([(70, "pending", 450, "USD", "banca-oeste", "processing", 11)])
    peak = impact.take_sample(incident, now=start + timedelta(minutes=2))
    from tests.impact.platform_db import reset_plays

    reset_plays([(5, "pending", 100, "USD", "banca-norte", "processing", 1)])  # fixed
    last = impact.take_sample(incident, now=start + timedelta(minutes=4))
    services.acknowledge_incident(incident, actor=responder)
    Runbook.objects.update(recovery_checks=[])  # verified recovery: test_recovery.py
    services.transition_incident(incident, Status.RESOLVED, actor=responder)
    pm = PostMortem.objects.get(incident=incident)
    local = lambda at: f"{timezone.localtime(at):%Y-%m-%d %H:%M %Z}"  # noqa: E731
    # No worker took a reading at resolution (the test's transaction never commits):
    # the last reading, six minutes older, is not called the figure at resolution.
    assert pm.impact_revenue.startswith(
        "Money at risk (plays pending over 60 min): peak "
        "5,000.00 DOP + 12.34 EUR + 700 JPY + 40.00 USD "
        f"at {local(peak.taken_at)}; nothing at the last reading before resolution "
        f"({local(last.taken_at)}; no reading was taken at resolution)."
    )
    assert "at resolution (read" not in pm.impact_revenue
    assert "banca-oeste 4.50 USD (1)" in pm.impact_revenue
    assert pm.impact_users.startswith("5 players with plays pending over 60 min at the peak")
    assert "120 affected users (estimate at declaration)" in pm.impact_users
    assert pm.impact_data.startswith("6 plays pending over 60 min at the peak")
    assert "requires_action 25.50 USD (1)" in pm.impact_data
    for text in (pm.impact_users, pm.impact_revenue, pm.impact_data):
        assert (
            "Source: postgres.money_at_risk (runbook step pay.money_at_risk) on lotolink-db, "
            "3 readings from" in text
        )


@pytest.mark.django_db(transaction=True)
def test_two_beats_at_once_store_one_sample_per_interval(platform, responder):
    import threading

    from django.db import connection

    incident = factories.declare(actor=responder, category="payment")
    now = timezone.now()
    barrier = threading.Barrier(2)
    results: list[object] = []
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            barrier.wait(timeout=5)
            results.append(impact.take_sample(incident, now=now))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert ImpactSample.objects.filter(incident=incident).count() == 1
    assert sum(r is not None for r in results) == 1


def test_a_stream_redraws_the_card_only_when_a_new_sample_lands(platform, responder, rf):
    incident = factories.declare(actor=responder, category="payment")
    impact.take_sample(incident, now=timezone.now() - timedelta(minutes=1))
    request = rf.get("/")
    request.user = responder
    updates = impact.MONEY_PANEL.live()
    assert updates(request, incident.pk) == []  # the page already shows this one
    assert updates(request, incident.pk) == []
    before = impact.latest_samples([incident.pk])
    sample = impact.take_sample(incident)
    assert impact.latest_samples([incident.pk]) == {incident.pk: sample.pk} != before
    ((seq, name, html),) = updates(request, incident.pk)
    assert (seq, name) == (None, "run")
    assert 'id="money-at-risk"' in html and 'hx-swap-oob="true"' in html
    assert 'data-samples="2"' in html
    assert updates(request, incident.pk) == []
