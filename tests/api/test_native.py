"""/api/v1 and the keys panel's endpoints through Flask's client, on the real model."""

from __future__ import annotations

import base64
import io
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cutout.extensions import close_app
from tests.api.conftest import Key, MakeKey

pytestmark = pytest.mark.model


def upload(client: FlaskClient, key: Key, data: bytes, name: str = "shoe", **extra: Any) -> Any:
    headers = {**key.headers, **extra.pop("headers", {})}
    form = {"name": name, "image": (io.BytesIO(data), "p.jpg"), **extra}
    return client.post("/api/v1/images", data=form, headers=headers)


def test_upload_list_get_rename_download_delete(client: FlaskClient, key: Key, photo: Path) -> None:
    created = upload(client, key, photo.read_bytes(), format="jpeg", background="white")
    assert created.status_code == 201, created.get_json()
    image = created.get_json()
    assert created.headers["Location"] == image["links"]["self"]
    assert 0.0 <= image["confidence"] <= 1.0 and isinstance(image["needs_review"], bool)
    assert created.headers["X-Cutout-Confidence"] == f"{image['confidence']:.3f}"
    assert image["processed"]["media_type"] == "image/jpeg" and "Set-Cookie" not in created.headers
    listed = client.get("/api/v1/images", headers=key.headers).get_json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == image["id"]
    renamed = client.patch(image["links"]["self"], json={"name": "red shoe"}, headers=key.headers)
    assert renamed.get_json()["name"] == "red shoe"
    processed = client.get(image["links"]["processed"], headers=key.headers)
    assert processed.mimetype == "image/jpeg" and processed.data[:2] == b"\xff\xd8"
    assert client.delete(image["links"]["self"], headers=key.headers).status_code == 204
    gone = client.get(image["links"]["self"], headers=key.headers)
    assert gone.status_code == 404 and gone.get_json()["error"] == "not_found"


def test_json_upload_with_base64(client: FlaskClient, key: Key, photo: Path) -> None:
    body = {
        "name": "b64",
        "image_b64": base64.b64encode(photo.read_bytes()).decode(),
        "mask_only": True,
        "crop": True,
        "margin": 5,
    }
    created = client.post("/api/v1/images", json=body, headers=key.headers)
    assert created.status_code == 201
    assert created.get_json()["processed"]["media_type"] == "image/png"


def test_idempotency_key_returns_the_first_result(
    client: FlaskClient, key: Key, photo: Path
) -> None:
    data = photo.read_bytes()
    headers = {"Idempotency-Key": "order-42"}
    first = upload(client, key, data, headers=headers)
    again = upload(client, key, data, headers=headers)
    other = upload(client, key, data, name="different", headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.get_json()["error"] == "idempotency_conflict"
    assert client.get("/api/v1/images", headers=key.headers).get_json()["total"] == 1


def test_a_failed_request_does_not_burn_its_idempotency_key(
    client: FlaskClient, key: Key, photo: Path
) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    assert upload(client, key, b"not an image", headers=headers).status_code == 400
    assert upload(client, key, b"not an image", headers=headers).status_code == 400
    assert (
        upload(client, key, photo.read_bytes(), headers={"Idempotency-Key": "x"}).status_code == 201
    )


def test_images_belong_to_the_keys_user_and_count_against_user_limit(
    client: FlaskClient, make_key: MakeKey, photo: Path
) -> None:
    alice, bob = make_key("alice"), make_key("bob")
    data = photo.read_bytes()
    ids = [upload(client, alice, data, name=f"p{i}").get_json()["id"] for i in range(3)]
    refused = upload(client, alice, data, name="p4")
    assert refused.status_code == 409 and refused.get_json()["error"] == "limit_reached"
    assert client.get(f"/api/v1/images/{ids[0]}", headers=bob.headers).status_code == 404
    assert client.delete(f"/api/v1/images/{ids[0]}", headers=bob.headers).status_code == 404
    page = client.get("/api/v1/images?page=2&per_page=2", headers=alice.headers).get_json()
    assert page["total"] == 3 and [i["id"] for i in page["items"]] == [ids[0]]  # newest first


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"name": "x"}, 400, "invalid_image"),
        ({"name": "", "image": (io.BytesIO(b"x"), "p.jpg")}, 400, "invalid_input"),
        ({"name": "x", "image": (io.BytesIO(b"not an image"), "p.jpg")}, 400, "invalid_image"),
        (
            {"name": "x", "format": "gif", "image": (io.BytesIO(b"x"), "p.jpg")},
            400,
            "invalid_input",
        ),
        ({"name": "x", "margin": "-1", "image": (io.BytesIO(b"x"), "p.jpg")}, 400, "invalid_input"),
    ],
)
def test_bad_uploads(
    client: FlaskClient, key: Key, form: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/api/v1/images", data=form, headers=key.headers)
    assert (response.status_code, response.get_json()["error"]) == (status, code)


def test_bad_json_bodies_and_urls(client: FlaskClient, key: Key) -> None:
    def send(body: Any) -> tuple[int, str]:
        response = client.post("/api/v1/images", json=body, headers=key.headers)
        return response.status_code, response.get_json()["error"]

    assert send(["not", "an", "object"]) == (400, "invalid_input")
    assert send({"name": "x"}) == (400, "invalid_input")  # neither image_b64 nor image_url
    assert send({"name": "x", "image_b64": "QQ==", "image_url": "http://e.com/a"})[0] == 400
    assert send({"name": "x", "image_b64": "%%%"}) == (400, "invalid_input")
    assert send({"name": "x", "image_url": "http://10.1.2.3/a.jpg"}) == (400, "invalid_url")
    assert send({"name": "x", "image_url": "http://127.0.0.1:9/a.jpg"}) == (400, "download_failed")
    bad_page = client.get("/api/v1/images?per_page=1000", headers=key.headers)
    assert bad_page.status_code == 400


def test_no_key_is_401_json_whatever_the_accept_header(client: FlaskClient) -> None:
    response = client.get("/api/v1/images", headers={"Accept": "text/html"})
    assert response.status_code == 401 and response.get_json()["error"] == "auth_failed"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Set-Cookie" not in response.headers
    missing = client.get("/api/v1/nothing-here", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"


def test_openapi_document_is_generated_from_the_routes(app: Flask, client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    routes = {
        re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", r.rule)
        for r in app.url_map.iter_rules()
        if r.endpoint.startswith("api.")
    }
    assert set(spec["paths"]) == routes
    post = spec["paths"]["/api/v1/images"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"201", "400", "401", "409", "429", "503"} <= set(post["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.get_data(as_text=True)
    bundle = client.get("/api/docs/assets/swagger-ui-bundle.js")
    bundle.close()  # a streamed file
    assert bundle.status_code == 200
    assert client.get("/api/docs/assets/../../etc/passwd").status_code == 404


def panel_token(client: FlaskClient) -> str:
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert match and 'id="api-keys"' in page and "/api/docs" in page
    return match.group(1)


def test_the_panel_makes_keys_for_the_browser_user_and_their_uploads_show_in_history(
    client: FlaskClient, photo: Path
) -> None:
    token = panel_token(client)
    assert client.post("/keys", json={"name": "no token"}).status_code == 400  # CSRF still applies
    made = client.post("/keys", json={"name": "shop"}, headers={"X-CSRFToken": token})
    assert made.status_code == 201
    secret, key_id = made.get_json()["secret"], made.get_json()["key"]["id"]
    listed = client.get("/keys").get_json()["keys"]
    assert [k["id"] for k in listed] == [key_id] and secret not in str(listed)
    assert (
        upload(client, Key(key_id, "", secret), photo.read_bytes(), name="via api").status_code
        == 201
    )
    history = client.get("/", headers={"Accept": "application/json"}).get_json()["records"]
    assert [r["image_name"] for r in history] == ["via api"]
    assert client.delete(f"/keys/{key_id}", headers={"X-CSRFToken": token}).status_code == 200
    assert client.get("/api/v1/images", headers={"X-Api-Key": secret}).status_code == 401


def test_the_panel_cannot_revoke_someone_elses_key(
    client: FlaskClient, app: Flask, key: Key
) -> None:
    token = panel_token(client)
    response = client.delete(f"/keys/{key.id}", headers={"X-CSRFToken": token})
    assert response.status_code == 404
    assert client.get("/v1.0/account", headers=key.headers).status_code == 200


# -- credits on every surface, keys from the page ---------------------------------------------


def credits_used(client: FlaskClient, key: Key) -> float:
    account = client.get("/v1.0/account", headers=key.headers).get_json()
    used: float = account["data"]["attributes"]["usage"]["credits_used"]
    return used


def test_native_images_cost_credits_like_removebg(
    client: FlaskClient, make_key: MakeKey, photo: Path
) -> None:
    """A key with no credits left got 402 on /v1.0 but 201 and the full cut-out here."""
    key = make_key(credits=1)
    assert upload(client, key, photo.read_bytes()).status_code == 201
    assert credits_used(client, key) == 1

    refused = upload(client, key, photo.read_bytes(), name="second")
    assert refused.status_code == 402 and refused.get_json()["error"] == "insufficient_credits"
    assert client.get("/api/v1/images", headers=key.headers).get_json()["total"] == 1
    assert credits_used(client, key) == 1


def test_a_failed_image_gives_its_credit_back(client: FlaskClient, make_key: MakeKey) -> None:
    key = make_key(credits=1)
    assert upload(client, key, b"not a photo").status_code == 400
    assert credits_used(client, key) == 0


def test_credits_are_exact_when_requests_race(app: Flask, make_key: MakeKey, photo: Path) -> None:
    key = make_key(user_id="racer", credits=2)
    data = photo.read_bytes()
    start = threading.Barrier(6)
    statuses: list[int] = []

    def send(number: int) -> None:
        client = app.test_client()
        start.wait()
        statuses.append(upload(client, key, data, name=f"n{number}").status_code)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    client = app.test_client()
    assert sorted(statuses) == [201, 201, 402, 402, 402, 402]
    assert credits_used(client, key) == 2
    assert client.get("/api/v1/images", headers=key.headers).get_json()["total"] == 2


def test_a_key_revoked_while_its_request_runs_gets_403(
    app: Flask, client: FlaskClient, make_key: MakeKey, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(credits=5)
    service = app.extensions["cutout.keys"]
    charge = service.charge

    def revoked_first(api_key: Any, cost: float) -> Any:
        service.revoke(api_key.id)  # between the key's check and its charge
        return charge(api_key, cost)

    monkeypatch.setattr(service, "charge", revoked_first)
    response = upload(client, key, photo.read_bytes())

    assert response.status_code == 403 and response.get_json()["error"] == "key_revoked"
    assert client.get("/", headers={"Accept": "application/json"}).get_json()["records"] == []


def test_page_keys_have_an_allowance_a_cap_and_a_rate(app: Flask, client: FlaskClient) -> None:
    """20 anonymous cookies used to mint 40 unlimited keys in 0.4 s."""
    token = panel_token(client)
    made = client.post("/keys", json={"name": "shop"}, headers={"X-CSRFToken": token})
    assert made.get_json()["key"]["credits"] == app.config["CUTOUT"].page_key_credits
    for n in range(4):
        client.post("/keys", json={"name": f"k{n}"}, headers={"X-CSRFToken": token})
    capped = client.post("/keys", json={"name": "sixth"}, headers={"X-CSRFToken": token})
    assert capped.status_code == 403 and "revoke one" in capped.get_json()["message"]

    statuses = []
    for _ in range(6):  # new visitors each time, from the same address
        fresh = app.test_client()
        statuses.append(
            fresh.post(
                "/keys", json={"name": "x"}, headers={"X-CSRFToken": panel_token(fresh)}
            ).status_code
        )
    assert statuses.count(201) == 4 and statuses[-1] == 429  # 10 an hour per address


def test_production_makes_no_keys_from_the_page_unless_told(
    api_settings: Any, shared_engine: Any
) -> None:
    from cutout.app import create_app

    for setting, allowed in ((None, False), (True, True)):
        app = create_app(
            api_settings.replace(env="production", secret_key="s" * 64, keys_from_page=setting),
            engine=shared_engine,
        )
        try:
            client = app.test_client()
            page = client.get("/").get_data(as_text=True)
            token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
            assert token
            made = client.post("/keys", json={"name": "x"}, headers={"X-CSRFToken": token[1]})
            assert (made.status_code == 201) is allowed
            assert ('id="key-form"' in page) is allowed
        finally:
            close_app(app)
