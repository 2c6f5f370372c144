# Every target creates .venv on first use, so a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.yaml

.PHONY: demo run resume status export verify preview test browser bench clean

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

verify: $(BIN)/harvester
	$(BIN)/harvester verify -c $(CONFIG)

preview: $(BIN)/harvester
	$(BIN)/harvester preview -c $(CONFIG)

test: $(BIN)/harvester browser
	$(BIN)/ruff check harvester tests bench
	$(BIN)/pytest -q

# The preview page is tested in Debian's Chromium; elsewhere that one test is skipped.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no chromium and no root apt-get: the preview page's browser test will be skipped"; fi

bench: $(BIN)/harvester  ## harvester vs img2dataset, side by side (README: Performance)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) outputs demo .pytest_cache .ruff_cache *.egg-info
