# Two commands set everything up on a fresh machine with Python 3.11 and pip:
#   make demo   - venv, install, keys, data, node + agents over mTLS, scripted bank session
#   make test   - venv, install, the whole test suite
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The node's PostgreSQL backend is tested against a real throwaway server
# (xinrong/tools/pgtemp.py runs initdb / pg_ctl from here).
PG_BIN ?= /usr/lib/postgresql/15/bin

# The enterprise portal's e2e test drives Debian's headless Chromium through
# Playwright (which cannot download a browser of its own here); CJK fonts so
# the Chinese pages render in screenshots.
CHROMIUM ?= /usr/bin/chromium
CJK_FONT ?= /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
SCREENSHOTS ?= docs/screenshots

# The printable credit report's test turns the PDF into a PNG and text with poppler.
PDFTOPPM  ?= /usr/bin/pdftoppm
PDFTOTEXT ?= /usr/bin/pdftotext

.PHONY: install postgres browser fonts pdftools demo test test-fast lint typecheck proto check-proto bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "xinrong needs Python 3.11, got %s" % sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) postgres browser pdftools

# PostgreSQL 15 binaries (no running service is needed: tests start their own).
postgres:
	@if [ ! -x $(PG_BIN)/initdb ] || [ ! -x $(PG_BIN)/pg_ctl ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing PostgreSQL 15 (apt-get install -y postgresql)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "PostgreSQL 15 binaries are missing in $(PG_BIN): run 'sudo apt-get install -y postgresql'" >&2; exit 1; \
	  fi; \
	fi

browser:
	@if [ ! -x $(CHROMIUM) ] || [ ! -f $(CJK_FONT) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing headless Chromium and a CJK font (apt-get install -y chromium fonts-wqy-microhei)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; \
	  else \
	    echo "Chromium or the CJK font is missing: run 'sudo apt-get install -y chromium fonts-wqy-microhei'" >&2; exit 1; \
	  fi; \
	fi

# The CJK font alone (the demo renders a credit report PDF with it; `browser` installs it too).
fonts:
	@if [ ! -f $(CJK_FONT) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing a CJK font (apt-get install -y fonts-wqy-microhei)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null; \
	  else \
	    echo "the CJK font is missing: run 'sudo apt-get install -y fonts-wqy-microhei'" >&2; exit 1; \
	  fi; \
	fi

# poppler's pdftoppm / pdftotext, for tests/test_report_render.py (the report's PDF uses the browser target's CJK font).
pdftools:
	@if [ ! -x $(PDFTOPPM) ] || [ ! -x $(PDFTOTEXT) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing poppler's PDF tools (apt-get install -y poppler-utils)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils >/dev/null; \
	  else \
	    echo "pdftoppm or pdftotext is missing: run 'sudo apt-get install -y poppler-utils'" >&2; exit 1; \
	  fi; \
	fi

# A PNG of each portal page, from the browser e2e test, for review without a browser.
screenshots: $(STAMP) browser
	XINRONG_PORTAL_SCREENSHOTS=$(abspath $(SCREENSHOTS)) $(BIN)/python -m pytest -q tests/test_portal_browser.py
	@ls -1 $(SCREENSHOTS)/*.png

demo: $(STAMP) fonts
	$(BIN)/xinrong demo

test: $(STAMP) postgres browser pdftools lint typecheck
	$(BIN)/python -m pytest -q -ra

# ruff (rules in pyproject.toml, docs/ENGINEERING.md) and the import contract.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test-fast: $(STAMP) postgres pdftools
	$(BIN)/python -m pytest -q -ra -m "not e2e and not slow"

typecheck: $(STAMP)
	$(BIN)/python -m mypy

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

check-proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py --check

bench: $(STAMP)
	$(BIN)/xinrong bench verify --seconds 10 --concurrency 8 --json
	$(BIN)/xinrong bench train --dataset default_credit --backend ckks --providers 2 --json
	$(BIN)/xinrong bench push --json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
