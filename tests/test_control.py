"""The admin state file (service/control.py) misbehaving, on the app built in this process.

Racing admin calls on two real workers are in test_admin.py; these need no second process: a corrupt
control.json, a RUNTIME_DIR that cannot be written, and the reset when a server starts.
"""

from __future__ import annotations

import json
import shutil

from .inprocess import make_app
from .lifecycle_helpers import digit_png

TOKEN = "control-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def predict_status(client, model: str = "mnist") -> int:
    body, _ = digit_png(0)
    return client.post(f"/v1/models/{model}/predict", data=body, headers={"Content-Type": "image/png"}).status_code


def test_a_server_starts_with_every_model_loaded_whatever_the_file_said(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "control.json").write_text(json.dumps({"unloaded": ["mnist"], "generation": 7}))
    client = make_app(monkeypatch, tmp_path, ADMIN_TOKEN=TOKEN).test_client()
    assert predict_status(client) == 200  # an unload does not outlive its server
    assert json.loads((run / "control.json").read_bytes()) == {"unloaded": [], "generation": 0}


def test_a_corrupt_control_file_is_read_as_empty_and_the_next_admin_call_repairs_it(tmp_path, monkeypatch):
    client = make_app(monkeypatch, tmp_path, ADMIN_TOKEN=TOKEN).test_client()
    state = tmp_path / "run" / "control.json"
    state.write_bytes(b'{"unloaded": ["mni')  # not something control.py writes, but never crash on it
    assert predict_status(client) == 200
    response = client.post("/v2/repository/models/mnist/unload", headers=AUTH)
    assert response.status_code == 200, response.json
    assert json.loads(state.read_bytes()) == {"unloaded": ["mnist"], "generation": 1}
    assert predict_status(client) == 404
    assert client.post("/v2/repository/models/mnist/load", headers=AUTH).status_code == 200
    assert predict_status(client) == 200


def test_admin_calls_are_503_and_change_nothing_when_runtime_dir_cannot_be_written(tmp_path, monkeypatch):
    client = make_app(monkeypatch, tmp_path, ADMIN_TOKEN=TOKEN).test_client()
    run = tmp_path / "run"
    shutil.rmtree(run)
    run.write_bytes(b"")  # a file where the folder was: nothing can be created in it (even as root)
    response = client.post("/v2/repository/models/mnist/unload", headers=AUTH)
    assert response.status_code == 503
    assert response.json == {"error": "the admin state cannot be written (is RUNTIME_DIR writable?); "
                                      "nothing was changed"}
    assert predict_status(client) == 200  # still served: the unload did not half-happen
