# Every target creates .venv on first use, so a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.yaml

.PHONY: demo run resume status export test bench clean

$(BIN)/harvester: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/harvester  ## the whole pipeline offline, against the built-in Flickr stand-in
	$(BIN)/harvester demo -o demo

run: $(BIN)/harvester  ## harvest config.yaml from Flickr (needs API_KEY and API_SECRET)
	$(BIN)/harvester run -c $(CONFIG)

resume: $(BIN)/harvester
	$(BIN)/harvester resume -c $(CONFIG)

status: $(BIN)/harvester
	$(BIN)/harvester status -c $(CONFIG)

export: $(BIN)/harvester
	$(BIN)/harvester export -c $(CONFIG)

test: $(BIN)/harvester
	$(BIN)/ruff check harvester tests bench
	$(BIN)/pytest -q

bench: $(BIN)/harvester
	$(BIN)/python bench/harvest_speed.py

clean:
	rm -rf $(VENV) outputs demo .pytest_cache .ruff_cache *.egg-info
