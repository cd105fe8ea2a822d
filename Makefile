# Two commands for a new user: `make serve` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080
DB     ?= var/voicegw.db

EXTENSIONS = find gateway routing providers storage loadtest -name '*.so' -delete; rm -f voicegw_native*.so

.PHONY: serve test lint bench venv compiled clean

# The install also compiles the per-frame modules with mypyc, in place (setup.py;
# VOICEGW_PURE_PYTHON=1 skips that). Old extensions go first: a skipped build must not leave them.
$(STAMP): pyproject.toml setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(EXTENSIONS)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# A compiled module whose source changed since its build is rebuilt (else the old build runs).
compiled: $(STAMP)
	@$(BIN)/python -m gateway.compiled || ($(EXTENSIONS); $(BIN)/pip install --quiet -e '.[test]')

venv: compiled

serve: compiled
	mkdir -p var
	$(BIN)/voicegw serve --demo --host $(HOST) --port $(PORT) --db $(DB)

test: compiled
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check gateway routing providers storage loadtest tests
	$(BIN)/ruff format --check gateway routing providers storage loadtest tests setup.py
	$(BIN)/mypy

bench: compiled
	$(BIN)/voicegw bench

clean:
	rm -rf $(VENV) var build *.egg-info
	$(EXTENSIONS)
