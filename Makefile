# The README's whole set-up: `make fit` and `make test`. Both create .venv on first use and
# reinstall only when pyproject.toml changes (the stamp file records the last install).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.edgekd-installed

.PHONY: fit test test-fast lint format install sshd chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[all,dev]'
	@touch $(STAMP)

fit: $(STAMP)
	$(VENV)/bin/edgekd fit --target pi5

test: $(STAMP) sshd chromium
	$(VENV)/bin/python -m pytest -q

# The edit loop: every test but the slow ones (conversions, longer training, sshd, torchrun, fit in a
# subprocess), docstring examples included. `make test` stays the full suite and what CI runs.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

# The SSH profiling tests run a real OpenSSH server on 127.0.0.1: install it from Debian's packages
# when it is missing and this user may (root with apt-get); otherwise those tests skip, saying why.
sshd:
	@test -x /usr/sbin/sshd || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q openssh-server >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q openssh-server >/dev/null 2>&1; }; }; } || \
		echo "openssh-server is not installed: the SSH profiling tests will skip"

# The report test renders report.html in headless Chromium: install Debian's chromium the same way
# when it is missing and this user may; otherwise that test skips, saying why.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q chromium >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
		echo "chromium is not installed: the report's browser test will skip"

# lint-imports checks the floors declared in pyproject.toml (docs/architecture.md).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
