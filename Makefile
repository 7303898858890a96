# PotaFlow — the commands a newcomer needs: `make run` and `make test`.
#
# Both create .venv on first use and (re)install requirements only when the
# requirements files changed since the last install (a copy of each installed
# file is kept inside .venv and compared byte for byte).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The environment and the make command line win over .env, which wins over the
# defaults (as in settings, which read .env themselves).
dotenv = $(shell sed -n 's/^[[:space:]]*$(1)[[:space:]]*=[[:space:]]*//p' .env 2>/dev/null | tail -n 1 | tr -d "\"'")
HOST ?= $(or $(call dotenv,HOST),127.0.0.1)
PORT ?= $(or $(call dotenv,PORT),8000)
# Seconds honcho waits after Ctrl-C before it SIGKILLs what still runs.
STOP_TIMEOUT ?= 15

# honcho, with two changes for a clean Ctrl-C:
# - it sends SIGTERM to each Procfile process only, not to its whole process
#   group. Otherwise the Celery pool children die at once, one of them may hold
#   the pool's queue lock, and the worker's warm shutdown then hangs on it for
#   good (seen: 1 stop in 3). The worker stops its own children instead.
# - it waits STOP_TIMEOUT seconds (not its fixed 5) before SIGKILLing the whole
#   group: a worker's warm shutdown takes 5-8 s on the filesystem broker.
define HONCHO_LAUNCHER
import os, signal, sys
import honcho.compat, honcho.manager
def terminate(self, pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
honcho.manager.KILL_WAIT = $(STOP_TIMEOUT)
honcho.compat.ProcessManager.terminate = terminate
# The sign-in summary (manage.py ensure_admin --signin-file) is printed last: once gunicorn booted
# a worker, the Celery worker is ready and beat started, so no start-up line pushes it away.
import honcho.printer
_write = honcho.printer.Printer.write
_seen = set()
_SIGNS = {"web": "Booting worker", "worker": " ready.", "beat": "beat: Starting"}
def write(self, message):
    _write(self, message)
    if "announced" in _seen or message.type != "line":
        return
    text = message.data.decode("utf-8", "replace") if isinstance(message.data, bytes) else str(message.data)
    name = (message.name or "").split(".")[0]
    if _SIGNS.get(name, "\0") in text:
        _seen.add(name)
    if set(_SIGNS) <= _seen:
        _seen.add("announced")
        path = os.environ.get("POTAFLOW_SIGNIN_FILE", "")
        try:
            with open(path) as f:
                details = f.read().splitlines()
            os.unlink(path)
        except OSError:
            details = []
        url = "http://%s:%s/" % (os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000"))
        rule = "=" * 76
        box = [rule, "  PotaFlow is up: " + url + "   (members sign in or sign up at " + url + "app/)"]
        box += ["  " + line for line in details]
        box += ["  Ctrl-C stops web, worker and beat.", rule]
        print("\n" + "\n".join(box) + "\n", file=self.output, flush=True)
honcho.printer.Printer.write = write
from honcho.command import main
main(sys.argv[1:])
endef
export HONCHO_LAUNCHER

export HOST PORT
# honcho runs the Procfile with this PATH, so gunicorn and celery come from .venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help run test test-fast lint fmt migrate bench bench-profile chaos cluster install install-dev clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY) ## create .venv and install requirements.txt (only when it changed)
	@cat requirements.txt constraints.txt | cmp -s - $(VENV)/.installed-requirements.txt || { \
		echo "Installing requirements.txt into $(VENV) ..."; \
		$(PIP) install -q -r requirements.txt -c constraints.txt && \
		cat requirements.txt constraints.txt > $(VENV)/.installed-requirements.txt; }

install-dev: install ## also install requirements-dev.txt (tests, linters)
	@cat requirements-dev.txt constraints.txt | cmp -s - $(VENV)/.installed-requirements-dev.txt || { \
		echo "Installing requirements-dev.txt into $(VENV) ..."; \
		$(PIP) install -q -r requirements-dev.txt -c constraints.txt && \
		cat requirements-dev.txt constraints.txt > $(VENV)/.installed-requirements-dev.txt; }

# honcho gets no .env of its own (--env /dev/null): it would override the real
# environment with it, the opposite of what settings do.
run: install ## migrate, ensure an admin user, start web + worker + beat (Ctrl-C stops all)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	@echo ""
	@echo "  PotaFlow is starting at http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/, health: /healthz)"
	@echo "  The sign-in is printed once web, worker and beat are up. Ctrl-C stops them all."
	@echo ""
	@signin=$$(mktemp) && $(PY) manage.py ensure_admin --signin-file "$$signin" && \
		POTAFLOW_SIGNIN_FILE="$$signin" exec $(PY) -c "$$HONCHO_LAUNCHER" start --procfile Procfile --port $(PORT) --env /dev/null

# pytest exits 5 when it collected no test: that fails here too, and says so.
test: install-dev ## run the whole test suite (pytest); extra args via PYTEST_ARGS
	@$(VENV)/bin/pytest $(PYTEST_ARGS) || { rc=$$?; \
		[ $$rc -ne 5 ] || echo "make test: pytest collected no tests; that is a failure, not a pass" >&2; \
		exit $$rc; }

test-fast: install-dev ## run the suite without the slow (process-starting) tests
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

lint: install-dev ## ruff check + ruff format --check + mypy (config: pyproject.toml [tool.mypy])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install-dev ## fix what ruff can fix and format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrate: install ## apply database migrations
	$(PY) manage.py migrate --noinput

# The performance suite (bench/README.md): each script starts its own stack (fresh PostgreSQL
# database potaflow_bench*, own redis-server), warms up, prints a table and one JSON line per figure.
# Options per script via BENCH_ARGS_<name> (command line or environment), e.g.
# make bench BENCH_SCRIPTS="intake e2e" BENCH_ARGS_intake="--duration 10" BENCH_ARGS_e2e="--duration 30".
BENCH_SCRIPTS ?= intake execution e2e growth memory sqlcount
bench: install ## performance suite: intake, execution, end-to-end, growth, memory, SQL counts (needs wrk)
	@command -v wrk >/dev/null || { echo "wrk is missing: sudo apt-get install -y wrk" >&2; exit 1; }
	@set -e; for name in $(BENCH_SCRIPTS); do \
		args=$$(printenv "BENCH_ARGS_$$name" || true); \
		echo "== bench/$$name.py $$args"; $(PY) bench/$$name.py $$args; \
	done

bench-profile: install ## py-spy profiles: a web worker under intake load, a pool child draining runs
	$(PY) bench/profile.py $(PROFILE_ARGS)

# Own PostgreSQL database (potaflow_chaos) and own redis-server; extra options via CHAOS_ARGS.
chaos: install ## chaos run: webhooks while worker, web and broker die; lost runs, duplicate effects, settle time
	$(PY) bench/chaos.py $(CHAOS_ARGS)

# Linux network namespaces, so root (sudo make cluster); needs Debian's nginx, pgbouncer, postgresql,
# redis-server / rabbitmq-server, iptables. Options via CLUSTER_ARGS, e.g. CLUSTER_ARGS="--quick --broker amqp".
cluster: install ## cluster run on 11 namespace hosts (root): hosts killed, cut off, restarted; lost, duplicates, firings
	$(PY) bench/cluster.py $(CLUSTER_ARGS)

clean: ## remove the virtualenv and caches (var/, the embedded database, is kept)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
