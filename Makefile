# The two commands from the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean messages compilemessages gettext

# The installer's output (setuptools' editable-build warnings and all) goes to var/install.log
# and is printed only when the install fails, so `make run` starts with the useful banner.
INSTALL_LOG := var/install.log
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 $(BIN)/pip

$(STAMP): pyproject.toml constraints.txt
	@mkdir -p var
	@echo "Installing into $(VENV) (log: $(INSTALL_LOG)) ..."
	@{ $(PYTHON) -m venv $(VENV) \
	  && $(PIP) install --upgrade pip \
	  && $(PIP) install -c constraints.txt -e '.[dev]'; } >$(INSTALL_LOG) 2>&1 \
	  || { cat $(INSTALL_LOG); echo "Install failed; the output above is in $(INSTALL_LOG)."; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# The translations (locale/*/LC_MESSAGES/*.po, README "Languages") are compiled to .mo files,
# which are not committed, before the demo and the tests: that needs GNU gettext's msgfmt.
gettext:
	@command -v msgfmt >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing gettext (msgfmt) ..."; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
	      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gettext >/dev/null; \
	  else \
	    echo "msgfmt (GNU gettext) is missing: install it (Debian/Ubuntu: sudo apt-get install gettext, macOS: brew install gettext)"; \
	    exit 1; \
	  fi; }

MESSAGES_IGNORE := --ignore=.venv --ignore=var --ignore=tests --ignore=artifacts --ignore=benchmarks --ignore=build

compilemessages: $(STAMP) gettext
	@DEBUG=1 $(BIN)/python manage.py compilemessages --ignore=.venv --ignore=var --verbosity 0

# After changing texts: collect them into the catalogues, translate the new (empty or fuzzy)
# entries in locale/nl/ (and, for a driver page's text, locale/de/ and locale/fr/), then
# `make messages` again to compile.
messages: $(STAMP) gettext
	DEBUG=1 $(BIN)/python manage.py makemessages -l nl -l de -l fr $(MESSAGES_IGNORE) --add-location=file --no-obsolete
	DEBUG=1 $(BIN)/python manage.py compilemessages --ignore=.venv --ignore=var

# Embedded defaults: SQLite and the filesystem broker under var/, nothing to install.
run: $(STAMP) compilemessages
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py runstack

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m evpay.testbed.import_graph --quiet
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
	DEBUG=1 $(BIN)/python manage.py check

test: compilemessages lint
	DEBUG=$${DEBUG:-1} $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var
