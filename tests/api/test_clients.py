"""remove.bg clients nobody here wrote, unchanged, against ``cutout serve`` over real HTTP.

* A refused upload leaves a kept-alive connection usable (found with the npm client).
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator

import pytest

from tests.api.test_live_api import cli_key, photo_path
from tests.live import LiveServer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("clients") / "data"
    env = {"CUTOUT_URL_ALLOWED_NETWORKS": "127.0.0.1/32", "CUTOUT_API_RATE_LIMIT": "1000/minute"}
    with LiveServer(data, env) as live:
        yield live


def test_a_refused_upload_leaves_the_kept_alive_connection_usable(server: LiveServer) -> None:
    """gunicorn skips at most 64 KiB of a body nobody read, then drops the connection."""
    upload = base64.b64encode(photo_path().read_bytes() * 3)
    body = json.dumps({"image_file_b64": upload.decode()}).encode()
    assert len(body) > 200_000
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    answers = []
    for key in ("cut_not-a-key", cli_key(server, "keep-alive")):
        headers = {"X-Api-Key": key, "Content-Type": "application/json"}
        connection.request("POST", "/v1.0/removebg", body=body, headers=headers)
        response = connection.getresponse()
        answers.append((response.status, response.getheader("Connection"), response.read()))
    connection.close()
    assert [a[:2] for a in answers] == [(403, "keep-alive"), (200, "keep-alive")]
    assert answers[1][2][:8] == b"\x89PNG\r\n\x1a\n"
