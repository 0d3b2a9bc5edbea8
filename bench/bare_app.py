"""The yardstick: a Flask endpoint that reads the body and returns a constant.

bench.py serves it under exactly the service's gunicorn settings, so the ratio service/bare isolates
what our serving path costs on top of Flask + gunicorn themselves.
"""

from flask import Flask, Response, request

app = Flask(__name__)
ANSWER = b'{"model_name":"bare","model_version":"1","predictions":[]}'


@app.post("/predict")
@app.post("/v1/models/<name>/predict")
@app.post("/v2/models/<name>/infer")
def predict(name: str | None = None) -> Response:
    request.get_data()
    return Response(ANSWER, mimetype="application/json")


@app.get("/v2/health/ready")
def ready() -> Response:
    """The same readiness route as the service, so both are started and awaited the same way."""
    return Response(b'{"ready":true}', mimetype="application/json")
