# Two commands for a new user: `make serve` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080
DB     ?= var/voicegw.db

.PHONY: serve test lint bench venv clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	mkdir -p var
	$(BIN)/voicegw serve --demo --host $(HOST) --port $(PORT) --db $(DB)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check gateway routing providers storage loadtest tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/voicegw bench

clean:
	rm -rf $(VENV) var build *.egg-info
