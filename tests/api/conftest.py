from __future__ import annotations

import pytest

from api import tokens


@pytest.fixture
def token_for():
    def make(user) -> dict[str, str]:
        _, token = tokens.issue(user, "test")
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def api(client, responder, token_for):
    """A client calling the API as the responder (token auth, no session)."""
    headers = token_for(responder)

    class Api:
        def get(self, path: str, **params):
            return client.get(f"/api/v1{path}", params, headers=headers)

        def post(self, path: str, body=None):
            return client.post(
                f"/api/v1{path}", body or {}, content_type="application/json", headers=headers
            )

        def put(self, path: str, body):
            return client.put(
                f"/api/v1{path}", body, content_type="application/json", headers=headers
            )

        def patch(self, path: str, body):
            return client.patch(
                f"/api/v1{path}", body, content_type="application/json", headers=headers
            )

    return Api()
