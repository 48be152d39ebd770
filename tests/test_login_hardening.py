"""Login throttling (django-axes) on the site and admin logins, and password rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.utils import timezone

from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def rosa(db):
    return factories.UserFactory(username="rosa", is_staff=True)


def _login(client, path: str, password: str):
    return client.post(path, {"username": "rosa", "password": password})


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_after_repeated_wrong_passwords_even_the_right_one_is_refused(client, rosa, path):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, path, "wrong guess").status_code == 200  # the form again
    assert _login(client, path, "wrong guess").status_code == 429  # the last allowed
    response = _login(client, path, factories.PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302  # still logged out


def test_the_lock_lifts_after_the_cool_off(client, rosa):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "/login/", "wrong guess")
    assert _login(client, "/login/", factories.PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    response = _login(client, "/login/", factories.PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(rosa.pk)


def test_a_few_mistakes_then_the_right_password_logs_in(client, rosa):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "/login/", "wrong guess")
    assert _login(client, "/login/", factories.PASSWORD).status_code == 302


@pytest.mark.parametrize("password", ["rosa.martinez", "password123", "12345678901", "short1!"])
def test_passwords_like_the_username_common_numeric_or_short_are_refused(password):
    user = factories.UserFactory.build(username="rosa.martinez", email="rosa@lotolink.test")
    with pytest.raises(ValidationError):
        validate_password(password, user)


def test_a_long_unrelated_passphrase_is_accepted():
    user = factories.UserFactory.build(username="rosa.martinez")
    validate_password("tangerine orbit lantern 42", user)
