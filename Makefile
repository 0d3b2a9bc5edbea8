# Two commands matter (see README): `make serve` and `make test`. Both build .venv/ from
# pyproject.toml pinned by constraints.txt, so installs are repeatable.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
PYTEST_ARGS ?=

.PHONY: serve test install install-serve install-test system-deps lint bench image lock audit clean grpc-code

# Byte-compiled first, as in the image: where PYTHONDONTWRITEBYTECODE is set, every start would
# otherwise compile the service from source (70-100 ms of CPU before the master forks).
serve: install-serve
	$(BIN)/python -m compileall -q service
	$(BIN)/gunicorn -c service/gunicorn.conf.py

test: install-test system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install-serve: $(VENV)/.serve
install-test: $(VENV)/.test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip

$(VENV)/.serve: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[train,test,dev]'
	touch $@ $(VENV)/.serve

# wrk (benchmarks), Chromium (browser tests) and Fashion-MNIST come from Debian, not PyPI.
system-deps:
	@bash .ci/system-deps.sh

lint: install-test
	$(BIN)/ruff check .

bench: install-test system-deps
	$(BIN)/python -m compileall -q service
	$(BIN)/python bench/bench.py

# Regenerate the committed gRPC code in service/grpc/ from grpc_predict_v2.proto (grpcio-tools, dev extra).
grpc-code: install-test
	$(BIN)/python -m service.grpc.codegen

image:
	bash -c 'source ../shared/container/podman-env.sh && podman build --format docker --network host --pull=never -t mnist-serving .'

# Re-pin every dependency after changing pyproject.toml (needs a fresh venv with the extras).
lock:
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv
	/tmp/lock-venv/bin/pip install -q -e '.[train,test,dev]'
	/tmp/lock-venv/bin/pip freeze --exclude-editable | grep -v '^mnist-serving' > constraints.txt

audit: install-test
	bash .ci/audit.sh

clean:
	rm -rf $(VENV) .pytest_cache
