# The two commands from the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean

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

# Embedded defaults: SQLite and the filesystem broker under var/, nothing to install.
run: $(STAMP)
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py runstack

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m evpay.testbed.import_graph --quiet
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
	DEBUG=1 $(BIN)/python manage.py check

test: lint
	DEBUG=$${DEBUG:-1} $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var
